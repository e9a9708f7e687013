//! Subresources and reviews: `pods/NAME/eviction` (policy/v1) answered as the apiserver does
//! (201, 429 with the budget's cause, 500 for a pod under several budgets, 409 for a stale uid
//! precondition), the `scale` subresource of Deployments, ReplicaSets and StatefulSets with
//! optimistic concurrency, and `SelfSubjectAccessReview`.

#![allow(clippy::result_large_err)]

use super::*;
use crate::model::{EvictError, Kind};

/// `POST .../pods/NAME/eviction` with an `Eviction` body (JSON or protobuf).
pub(super) fn evict(w: &mut World, ns: &str, name: &str, ask: &Ask) -> Response {
    let eviction: Value = match ask.json() {
        Ok(v) => v,
        Err(e) => return refused(&e),
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
    match w.evict_deferred(ns, name, uid.as_deref()) {
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

/// `GET`, `PUT` or `PATCH` `.../NAME/scale`.
pub(super) fn scale(
    w: &mut World,
    res: Res,
    ns: &str,
    name: &str,
    ask: &Ask,
) -> Result<Response, ApiError> {
    let kind = match res {
        Res::StatefulSet => Kind::StatefulSet,
        Res::ReplicaSet => Kind::ReplicaSet,
        _ => Kind::Deployment,
    };
    let key = (kind, ns.to_string(), name.to_string());
    let not_found = || ApiError::NotFound {
        resource: res.qualified(),
        name: name.to_string(),
    };
    let d = w.workloads.get(&key).cloned().ok_or_else(not_found)?;
    let current =
        serde_json::to_value(kube::scale(&d, w)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let doc = match ask.method {
        Method::GET => return Ok(ok(&current)),
        Method::PUT => ask.json()?,
        Method::PATCH => {
            let mut doc = current.clone();
            let patch: Value = serde_json::from_slice(&ask.body)
                .map_err(|e| ApiError::BadRequest(format!("the patch is not JSON: {e}")))?;
            if ask.content_type.starts_with("application/json-patch+json") {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut doc, &ops)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            } else {
                json_patch::merge(&mut doc, &patch);
            }
            doc
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    // Optimistic concurrency, as the apiserver: a stale resourceVersion is a conflict.
    crate::admission::check_version(
        res,
        name,
        doc["metadata"]["resourceVersion"].as_str(),
        &d.resource_version.to_string(),
    )?;
    let replicas = doc["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::Invalid {
            kind: "Scale".into(),
            group: "autoscaling".into(),
            name: name.to_string(),
            causes: vec![crate::admission::FieldError::required("spec.replicas", "")],
        })?;
    if replicas < 0 {
        return Err(ApiError::Invalid {
            kind: "Scale".into(),
            group: "autoscaling".into(),
            name: name.to_string(),
            causes: vec![crate::admission::FieldError::invalid(
                "spec.replicas",
                replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        });
    }
    w.scale(kind, ns, name, replicas.min(i64::from(u32::MAX)) as u32)
        .map_err(|_| not_found())?;
    let d = w.workloads.get(&key).ok_or_else(not_found)?;
    Ok(ok(&kube::scale(d, w)))
}

/// `SelfSubjectAccessReview`: allowed unless the world's faults deny that verb on that
/// resource (`verb resource[/subresource]`).
pub(super) fn access_review(w: &World, body: &[u8]) -> Response {
    let mut review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the review is not JSON: {e}")),
    };
    let a = &review["spec"]["resourceAttributes"];
    let str_at = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (verb, resource) = (str_at(&a["verb"]), str_at(&a["resource"]));
    let sub = str_at(&a["subresource"]);
    let key = if sub.is_empty() {
        format!("{verb} {resource}")
    } else {
        format!("{verb} {resource}/{sub}")
    };
    let allowed = !w.faults.denied.contains(&key);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "the sim allows it"})
    } else {
        json!({"allowed": false, "reason": format!("the sim's faults deny {key}")})
    };
    json_response(StatusCode::CREATED, &review)
}
