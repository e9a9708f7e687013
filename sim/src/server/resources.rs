//! The resources' verbs: nodes, pods and evictions, PodDisruptionBudgets, the apps workloads
//! and their scale subresource.

#![allow(clippy::result_large_err)]

use super::*;

pub(super) fn nodes(
    w: &mut World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
    content_type: &str,
    body: &[u8],
) -> Response {
    let now = w.now();
    match (method.clone(), &t.name, t.sub.as_deref()) {
        (Method::GET, None, None) => {
            let filter = match Filter::parse(q) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let nodes: Vec<_> = w
                .nodes
                .values()
                .filter(|n| {
                    filter.keep(&n.labels, |k| match k {
                        "metadata.name" => Some(n.name.clone()),
                        "spec.unschedulable" => Some(n.unschedulable.to_string()),
                        _ => None,
                    })
                })
                .map(|n| kube::node(n, now))
                .collect();
            if table {
                return ok(&crate::table::nodes(&nodes, now, w.resource_version(), q));
            }
            let items = nodes
                .iter()
                .filter_map(|n| serde_json::to_value(n).ok())
                .collect();
            ok(&list_json("NodeList", "v1", w.resource_version(), items))
        }
        (Method::GET, Some(name), None | Some("status")) => match w.nodes.get(name) {
            Some(n) => {
                let n = kube::node(n, now);
                if table {
                    ok(&crate::table::nodes(&[n], now, w.resource_version(), q))
                } else {
                    ok(&n)
                }
            }
            None => not_found("nodes", name),
        },
        (Method::PATCH, Some(name), None) => {
            let Some(n) = w.nodes.get(name) else {
                return not_found("nodes", name);
            };
            let mut doc = match serde_json::to_value(kube::node(n, now)) {
                Ok(v) => v,
                Err(e) => return bad_request(e.to_string()),
            };
            if let Err(r) = apply_patch(&mut doc, content_type, body) {
                return r;
            }
            let patched: k8s_openapi::api::core::v1::Node = match serde_json::from_value(doc) {
                Ok(n) => n,
                Err(e) => return bad_request(format!("the patched node is invalid: {e}")),
            };
            let e = kube::node_edits(&patched);
            let r = w
                .set_node_meta(name, e.labels, e.annotations, e.taints)
                .and_then(|()| w.set_unschedulable(name, e.unschedulable));
            if let Err(e) = r {
                return model_error(e);
            }
            match w.nodes.get(name) {
                Some(n) => ok(&kube::node(n, w.now())),
                None => not_found("nodes", name),
            }
        }
        _ => method_not_allowed(),
    }
}

pub(super) fn pod_fields(p: &SimPod) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| match k {
        "metadata.name" => Some(p.name.clone()),
        "metadata.namespace" => Some(p.namespace.clone()),
        // Unscheduled pods have an empty nodeName, which `spec.nodeName=` selects.
        "spec.nodeName" => Some(p.node.clone().unwrap_or_default()),
        "status.phase" => Some(p.phase.as_str().to_string()),
        _ => None,
    }
}

pub(super) fn pods(
    w: &mut World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
    body: &[u8],
) -> Response {
    match (method.clone(), &t.name, t.sub.as_deref()) {
        (Method::GET, None, None) => {
            let filter = match Filter::parse(q) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let selected: Vec<&SimPod> = w
                .pods
                .values()
                .filter(|p| t.namespace.as_ref().is_none_or(|ns| &p.namespace == ns))
                .filter(|p| filter.keep(&p.spec.labels, pod_fields(p)))
                .collect();
            if table {
                let objects: Vec<_> = selected.iter().map(|p| kube::pod(p, w)).collect();
                return ok(&crate::table::pods(&objects, selected.as_slice(), w, q));
            }
            let keys: Vec<(String, String)> = selected.iter().map(|p| p.key()).collect();
            let body = kube::pods_json(w, &keys);
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let ns = t.namespace.clone().unwrap_or_default();
            match w.pods.get(&(ns, name.clone())) {
                Some(p) if table => ok(&crate::table::pods(&[kube::pod(p, w)], &[p], w, q)),
                Some(p) => ok(&kube::pod(p, w)),
                None => not_found("pods", name),
            }
        }
        (Method::DELETE, Some(name), None) => {
            let ns = t.namespace.clone().unwrap_or_default();
            let grace = query_grace(q).or_else(|| body_grace(body));
            match w.delete_pod(&ns, name, grace) {
                Ok(p) => ok(&kube::pod(&p, w)),
                Err(e) => model_error(e),
            }
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let ns = t.namespace.clone().unwrap_or_default();
            evict(w, &ns, name, body)
        }
        _ => method_not_allowed(),
    }
}

pub(super) fn query_grace(q: &BTreeMap<String, String>) -> Option<Millis> {
    q.get("gracePeriodSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s * 1000)
}

pub(super) fn body_grace(body: &[u8]) -> Option<Millis> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["gracePeriodSeconds"].as_u64().map(|s| s * 1000)
}

/// `POST .../pods/NAME/eviction` with an `Eviction` body, answered as the apiserver does.
pub(super) fn evict(w: &mut World, ns: &str, name: &str, body: &[u8]) -> Response {
    let eviction: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the eviction is not JSON: {e}")),
    };
    if eviction["kind"].as_str().is_some_and(|k| k != "Eviction") {
        return bad_request(format!("expected an Eviction, got {}", eviction["kind"]));
    }
    if let Some(n) = eviction["metadata"]["name"].as_str()
        && n != name
    {
        return bad_request("name in URL does not match name in Eviction object".into());
    }
    // kube 5's `Api::evict` sends `delete_options` (unknown to a real apiserver, which ignores
    // it); we are strict so that such a client is noticed here rather than in production.
    if eviction.get("delete_options").is_some() {
        return bad_request(
            "unknown field \"delete_options\" in policy/v1, Kind=Eviction (did you mean deleteOptions?)"
                .into(),
        );
    }
    let uid = eviction["deleteOptions"]["preconditions"]["uid"]
        .as_str()
        .map(str::to_string);
    match w.evict(ns, name, uid.as_deref()) {
        Ok(()) => json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
        Err(EvictError::NotFound(n)) => not_found("pods", &n),
        Err(EvictError::Conflict { message }) => {
            status(StatusCode::CONFLICT, "Conflict", message, None)
        }
        Err(e @ EvictError::MultiplePdbs(_)) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {e}"),
            Some(meta::StatusDetails {
                causes: Some(vec![meta::StatusCause {
                    message: Some(e.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        ),
        Err(e @ EvictError::Blocked { .. }) => {
            let EvictError::Blocked { pdb, status: s } = &e else {
                return method_not_allowed();
            };
            status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                e.to_string(),
                Some(meta::StatusDetails {
                    causes: Some(vec![meta::StatusCause {
                        reason: Some("DisruptionBudget".into()),
                        message: Some(format!(
                            "The disruption budget {pdb} needs {} healthy pods and has {} currently",
                            s.desired_healthy, s.current_healthy
                        )),
                        field: None,
                    }]),
                    ..Default::default()
                }),
            )
        }
    }
}

pub(super) fn pdbs(
    w: &World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    match &t.name {
        None => {
            let filter = match Filter::parse(q) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let items = w
                .pdbs
                .values()
                .filter(|b| t.namespace.as_ref().is_none_or(|ns| &b.namespace == ns))
                .filter(|b| {
                    filter.keep(&Labels::new(), |k| match k {
                        "metadata.name" => Some(b.name.clone()),
                        "metadata.namespace" => Some(b.namespace.clone()),
                        _ => None,
                    })
                })
                .filter_map(|b| serde_json::to_value(kube::pdb(b, w)).ok())
                .collect();
            ok(&list_json(
                "PodDisruptionBudgetList",
                "policy/v1",
                w.resource_version(),
                items,
            ))
        }
        Some(name) => {
            let ns = t.namespace.clone().unwrap_or_default();
            match w.pdbs.get(&(ns, name.clone())) {
                Some(b) => ok(&kube::pdb(b, w)),
                None => not_found("poddisruptionbudgets.policy", name),
            }
        }
    }
}

pub(super) fn workloads(
    w: &mut World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response {
    let kind = match t.resource.as_str() {
        "deployments" => Some(Kind::Deployment),
        "statefulsets" => Some(Kind::StatefulSet),
        "daemonsets" => Some(Kind::DaemonSet),
        _ => None,
    };
    let resource = format!("{}.apps", t.resource);
    let filter = match Filter::parse(q) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let in_ns = |ns: &String| t.namespace.as_ref().is_none_or(|n| n == ns);
    match (method.clone(), &t.name, t.sub.as_deref(), kind) {
        // ReplicaSets are derived from their Deployments.
        (Method::GET, None, None, None) => {
            let items = w
                .workloads
                .values()
                .filter(|d| d.kind == Kind::Deployment && in_ns(&d.namespace))
                .filter(|d| filter.keep(&d.template.labels, |_| None))
                .filter_map(|d| kube::replica_set(d, w))
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect();
            ok(&list_json(
                "ReplicaSetList",
                "apps/v1",
                w.resource_version(),
                items,
            ))
        }
        (Method::GET, Some(name), None, None) => w
            .workloads
            .values()
            .filter(|d| d.kind == Kind::Deployment && in_ns(&d.namespace))
            .find_map(|d| {
                kube::replica_set(d, w).filter(|r| r.metadata.name.as_deref() == Some(name))
            })
            .map(|r| ok(&r))
            .unwrap_or_else(|| not_found(&resource, name)),
        (Method::GET, None, None, Some(kind)) => {
            let items = w
                .workloads
                .values()
                .filter(|d| d.kind == kind && in_ns(&d.namespace))
                .filter(|d| {
                    filter.keep(&d.template.labels, |k| match k {
                        "metadata.name" => Some(d.name.clone()),
                        "metadata.namespace" => Some(d.namespace.clone()),
                        _ => None,
                    })
                })
                .filter_map(|d| kube::workload_json(d, w).ok())
                .collect();
            let list_kind = format!("{}List", kind.as_str());
            ok(&list_json(
                &list_kind,
                "apps/v1",
                w.resource_version(),
                items,
            ))
        }
        (_, Some(name), sub, Some(kind)) => {
            let key = (kind, t.namespace.clone().unwrap_or_default(), name.clone());
            let Some(d) = w.workloads.get(&key).cloned() else {
                return not_found(&resource, name);
            };
            match (method.clone(), sub) {
                (Method::GET, None) => match kube::workload_json(&d, w) {
                    Ok(v) => ok(&v),
                    Err(e) => bad_request(e.to_string()),
                },
                (Method::GET, Some("scale")) if kind != Kind::DaemonSet => ok(&kube::scale(&d, w)),
                // A DaemonSet's pod image (kube-proxy's, in a rollback).
                (Method::PATCH, None) if kind == Kind::DaemonSet => {
                    let mut doc = match kube::workload_json(&d, w) {
                        Ok(v) => v,
                        Err(e) => return bad_request(e.to_string()),
                    };
                    if let Err(r) = apply_patch(&mut doc, content_type, body) {
                        return r;
                    }
                    let Some(image) = doc["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .map(str::to_string)
                    else {
                        return bad_request("the patched DaemonSet has no container image".into());
                    };
                    if let Err(e) = w.set_image(kind, &key.1, name, &image) {
                        return model_error(e);
                    }
                    match w.workloads.get(&key).map(|d| kube::workload_json(d, w)) {
                        Some(Ok(v)) => ok(&v),
                        Some(Err(e)) => bad_request(e.to_string()),
                        None => not_found(&resource, name),
                    }
                }
                (Method::PATCH | Method::PUT, Some("scale")) if kind != Kind::DaemonSet => {
                    let mut doc = match serde_json::to_value(kube::scale(&d, w)) {
                        Ok(v) => v,
                        Err(e) => return bad_request(e.to_string()),
                    };
                    if method == Method::PUT {
                        doc = match serde_json::from_slice(body) {
                            Ok(v) => v,
                            Err(e) => return bad_request(format!("the Scale is not JSON: {e}")),
                        };
                    } else if let Err(r) = apply_patch(&mut doc, content_type, body) {
                        return r;
                    }
                    // Optimistic concurrency, as the apiserver: a stale resourceVersion
                    // in the body is a conflict.
                    if let Some(rv) = doc["metadata"]["resourceVersion"].as_str()
                        && rv != d.resource_version.to_string()
                    {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!(
                                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                            ),
                            None,
                        );
                    }
                    let Some(replicas) = doc["spec"]["replicas"].as_u64() else {
                        return bad_request("spec.replicas must be a non-negative integer".into());
                    };
                    if let Err(e) =
                        w.scale(kind, &key.1, name, replicas.min(u64::from(u32::MAX)) as u32)
                    {
                        return model_error(e);
                    }
                    match w.workloads.get(&key) {
                        Some(d) => ok(&kube::scale(d, w)),
                        None => not_found(&resource, name),
                    }
                }
                _ => method_not_allowed(),
            }
        }
        _ => method_not_allowed(),
    }
}
