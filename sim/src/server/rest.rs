//! The verbs on every resource: list and get (as JSON or a server-side Table), create, update
//! (PUT), patch (JSON, merge and strategic merge; server-side apply is refused with the
//! apiserver's 415), and delete with `deleteOptions`. `dryRun=All` runs the request on a copy of
//! the world and keeps nothing. What a kind accepts is `admission`'s.

#![allow(clippy::result_large_err)]

use super::*;
use crate::admission::FieldValidation;
use crate::admission::kinds::{self, DeleteOptions};
use crate::model::{Kind, Propagation};

/// A response with `Warning` headers (unknown fields under `fieldValidation=Warn`).
fn with_warnings(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut r = json_response(code, v);
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {}", crate::admission::quoted(w))) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

/// Every object of `res` (in `ns`, or everywhere) as JSON.
pub(super) fn objects(w: &World, res: Res, ns: Option<&str>) -> Vec<Value> {
    let in_ns = |n: &str| ns.is_none_or(|x| x == n);
    let all = |v: Vec<Option<Value>>| v.into_iter().flatten().collect::<Vec<_>>();
    let ser = |v: serde_json::Result<Value>| v.ok();
    match res {
        Res::Namespace => all(w
            .namespaces
            .values()
            .map(|n| ser(serde_json::to_value(n)))
            .collect()),
        Res::Node => all(w
            .nodes
            .values()
            .map(|n| ser(serde_json::to_value(kube::node(n, w.now()))))
            .collect()),
        Res::Pod => all(w
            .pods
            .values()
            .filter(|p| in_ns(&p.namespace))
            .map(|p| ser(serde_json::to_value(kube::pod(p, w))))
            .collect()),
        Res::Service => all(w
            .services
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, s)| ser(serde_json::to_value(s)))
            .collect()),
        Res::Secret => all(w
            .secrets
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, s)| ser(serde_json::to_value(s)))
            .collect()),
        Res::ConfigMap => all(w
            .config_maps
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, s)| ser(serde_json::to_value(s)))
            .collect()),
        Res::Claim => all(w
            .claims
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, s)| ser(serde_json::to_value(s)))
            .collect()),
        Res::Volume => all(w
            .volumes
            .values()
            .map(|v| ser(serde_json::to_value(v)))
            .collect()),
        Res::StorageClass => all(w
            .storage_classes
            .values()
            .map(|v| ser(serde_json::to_value(v)))
            .collect()),
        Res::Event => all(w
            .events
            .items
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, e)| ser(serde_json::to_value(e)))
            .collect()),
        Res::EventV1 => w
            .events
            .items
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, e)| kube::event_v1(e))
            .collect(),
        Res::Deployment | Res::StatefulSet | Res::DaemonSet => {
            let kind = match res {
                Res::Deployment => Kind::Deployment,
                Res::StatefulSet => Kind::StatefulSet,
                _ => Kind::DaemonSet,
            };
            all(w
                .workloads
                .values()
                .filter(|d| d.kind == kind && in_ns(&d.namespace))
                .map(|d| kube::workload_json(d, w).ok())
                .collect())
        }
        Res::ReplicaSet => {
            let mut out = Vec::new();
            for d in w.workloads.values().filter(|d| in_ns(&d.namespace)) {
                match d.kind {
                    Kind::Deployment => out.extend(
                        kube::replica_sets(d, w)
                            .iter()
                            .filter_map(|r| serde_json::to_value(r).ok()),
                    ),
                    Kind::ReplicaSet => out.extend(kube::workload_json(d, w).ok()),
                    _ => {}
                }
            }
            out
        }
        Res::Job => w
            .jobs
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, j)| kube::job(j))
            .collect(),
        Res::Budget => all(w
            .pdbs
            .iter()
            .filter(|(k, _)| in_ns(&k.0))
            .map(|(_, b)| ser(serde_json::to_value(kube::pdb(b, w))))
            .collect()),
    }
}

fn list(w: &mut World, res: Res, ns: Option<&str>, ask: &Ask) -> Result<Response, ApiError> {
    let filter = Filter::parse(&ask.query, res)?;
    let rv = w.resource_version();
    if res == Res::Pod && !ask.table {
        // The health gate lists every pod of a large cluster: kept JSON, filtered on the model.
        // A drain's `spec.nodeName=NODE` reads that node's pods, not every pod.
        let candidates: Box<dyn Iterator<Item = &crate::model::SimPod>> = match filter.node_name() {
            Some(node) => Box::new(w.pods_bound_to(node)),
            None => Box::new(w.pods.values()),
        };
        let keys: Vec<(String, String)> = candidates
            .filter(|p| ns.is_none_or(|n| p.namespace == n))
            .filter(|p| {
                filter.keep(&p.spec.labels, |k| match k {
                    "metadata.name" => Some(p.name.clone()),
                    "metadata.namespace" => Some(p.namespace.clone()),
                    // Unscheduled pods have an empty nodeName, which `spec.nodeName=` selects.
                    "spec.nodeName" => Some(p.node.clone().unwrap_or_default()),
                    "status.phase" => Some(p.phase.as_str().to_string()),
                    "status.podIP" => Some(p.ip.clone()),
                    "spec.restartPolicy" => Some(p.spec.restart.as_str().to_string()),
                    other => {
                        let v = serde_json::to_value(kube::pod(p, w)).unwrap_or_default();
                        selector::field_of(&v, other)
                    }
                })
            })
            .map(|p| p.key())
            .collect();
        let body = kube::pods_json(w, &keys);
        return Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response());
    }
    let items: Vec<Value> = objects(w, res, ns)
        .into_iter()
        .filter(|v| filter.keep_object(v))
        .collect();
    if ask.table {
        return Ok(ok(&crate::table::table(
            res,
            &items,
            w.now(),
            rv,
            &ask.query,
            true,
        )));
    }
    let def = res.def();
    Ok(ok(&json!({
        "kind": format!("{}List", def.kind), "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })))
}

fn get(w: &World, res: Res, ns: &str, name: &str, ask: &Ask) -> Result<Response, ApiError> {
    let v = kube::object(w, res, ns, name).ok_or_else(|| ApiError::NotFound {
        resource: res.qualified(),
        name: name.to_string(),
    })?;
    if ask.table {
        return Ok(ok(&crate::table::table(
            res,
            std::slice::from_ref(&v),
            w.now(),
            w.resource_version(),
            &ask.query,
            true,
        )));
    }
    Ok(ok(&v))
}

fn dry_run(q: &BTreeMap<String, String>) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Invalid dry run value: {other}; the only supported value is All"
        ))),
    }
}

/// Runs `f` on the world, or on a copy of it under `dryRun=All`.
fn maybe_dry<T>(w: &mut World, dry: bool, f: impl FnOnce(&mut World) -> T) -> T {
    if dry {
        let mut copy = w.clone();
        copy.set_journal(false);
        copy.set_events(false);
        f(&mut copy)
    } else {
        f(w)
    }
}

/// The body of a PATCH applied to `doc`, by its content type.
fn patched(doc: &mut Value, ask: &Ask) -> Result<(), ApiError> {
    let ct = ask.content_type.as_str();
    if ct.starts_with("application/apply-patch") {
        return Err(ApiError::UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json".into(),
        ));
    }
    let patch: Value = serde_json::from_slice(&ask.body)
        .map_err(|e| ApiError::BadRequest(format!("the patch is not JSON: {e}")))?;
    if ct.starts_with("application/json-patch+json") {
        let ops: json_patch::Patch = serde_json::from_value(patch)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(doc, &ops).map_err(|e| ApiError::BadRequest(e.to_string()))
    } else if ct.starts_with("application/merge-patch+json") {
        json_patch::merge(doc, &patch);
        Ok(())
    } else if ct.starts_with("application/strategic-merge-patch+json") {
        crate::patch::strategic(doc, &patch).map_err(|e| ApiError::BadRequest(e.to_string()))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"
        )))
    }
}

/// `deleteOptions` from the body (JSON or protobuf) and the query.
fn delete_options(ask: &Ask) -> Result<(DeleteOptions, bool), ApiError> {
    let body = if ask.body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        ask.json()?
    };
    let q = &ask.query;
    let propagation = body["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| q.get("propagationPolicy").cloned())
        .or_else(|| {
            // The older flag: orphanDependents=true is Orphan, false is Background.
            body["orphanDependents"]
                .as_bool()
                .or_else(|| q.get("orphanDependents").map(|v| v == "true"))
                .map(|o| if o { "Orphan" } else { "Background" }.to_string())
        });
    let propagation = match propagation {
        None => None,
        Some(p) => Some(Propagation::parse(&p).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            ))
        })?),
    };
    let grace = body["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| q.get("gracePeriodSeconds").and_then(|s| s.parse().ok()))
        .map(|s| s.max(0) as Millis * 1000);
    let dry = body["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"))
        || dry_run(q)?;
    Ok((
        DeleteOptions {
            propagation,
            grace_ms: grace,
            uid: body["preconditions"]["uid"].as_str().map(str::to_string),
            resource_version: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
        },
        dry,
    ))
}

fn verb_allowed(res: Res, verb: &str) -> Result<(), ApiError> {
    if res.verbs().contains(&verb) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

fn serve_result(w: &mut World, res: Res, t: &Target, ask: &Ask) -> Result<Response, ApiError> {
    let def = res.def();
    if !def.namespaced && t.namespace.is_some() {
        return Err(ApiError::NotFound {
            resource: String::new(),
            name: "the server could not find the requested resource".into(),
        });
    }
    let ns = t.namespace.as_deref();
    let ns_str = ns.unwrap_or_default();
    let fv = || FieldValidation::parse(ask.query.get("fieldValidation").map(String::as_str));
    match (ask.method.clone(), t.name.as_deref(), t.sub.as_deref()) {
        (Method::GET, None, None) => list(w, res, ns, ask),
        (Method::GET, Some(name), None | Some("status")) => get(w, res, ns_str, name, ask),
        (Method::POST, None, None) => {
            verb_allowed(res, "create")?;
            if def.namespaced && ns.is_none() {
                return Err(ApiError::MethodNotAllowed);
            }
            let body = ask.json()?;
            let fv = fv()?;
            let dry = dry_run(&ask.query)?;
            let (v, warnings) = maybe_dry(w, dry, |w| kinds::create(w, res, ns, &body, fv))?;
            Ok(with_warnings(StatusCode::CREATED, &v, &warnings))
        }
        (Method::PUT, Some(name), None) => {
            verb_allowed(res, "update")?;
            let body = ask.json()?;
            let fv = fv()?;
            let dry = dry_run(&ask.query)?;
            let (v, warnings) = maybe_dry(w, dry, |w| kinds::update(w, res, ns, name, &body, fv))?;
            Ok(with_warnings(StatusCode::OK, &v, &warnings))
        }
        (Method::PATCH, Some(name), None) => {
            verb_allowed(res, "patch")?;
            let mut doc = kube::object(w, res, ns_str, name).ok_or_else(|| ApiError::NotFound {
                resource: res.qualified(),
                name: name.to_string(),
            })?;
            let before = doc.clone();
            patched(&mut doc, ask)?;
            if doc == before {
                // A patch that changes nothing is not written: no new version, no watch event.
                return Ok(ok(&doc));
            }
            let fv = fv()?;
            let dry = dry_run(&ask.query)?;
            let (v, warnings) = maybe_dry(w, dry, |w| kinds::update(w, res, ns, name, &doc, fv))?;
            Ok(with_warnings(StatusCode::OK, &v, &warnings))
        }
        (Method::DELETE, Some(name), None) => {
            verb_allowed(res, "delete")?;
            let (opts, dry) = delete_options(ask)?;
            let v = maybe_dry(w, dry, |w| kinds::delete(w, res, ns, name, &opts))?;
            Ok(ok(&v))
        }
        // The kubelet's running config, through the apiserver's node proxy.
        (Method::GET, Some(name), Some("proxy/configz")) if res == Res::Node => {
            Ok(match w.configz(name) {
                Ok(v) => ok(&v),
                Err(e) => model_error(e),
            })
        }
        (Method::POST, Some(name), Some("eviction")) if res == Res::Pod => {
            Ok(subresources::evict(w, ns_str, name, ask))
        }
        (_, Some(name), Some("scale"))
            if matches!(res, Res::Deployment | Res::StatefulSet | Res::ReplicaSet) =>
        {
            subresources::scale(w, res, ns_str, name, ask)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

pub(super) fn serve(w: &mut World, res: Res, t: &Target, ask: &Ask) -> Response {
    serve_result(w, res, t, ask).unwrap_or_else(|e| refused(&e))
}
