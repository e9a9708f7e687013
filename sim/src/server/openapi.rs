//! OpenAPI v3, as much of it as clients read: the root (`/openapi/v3`, each group-version's
//! document and its address) and each group-version's paths, whose operations name their kind
//! (`x-kubernetes-group-version-kind`) and parameters. kubectl reads them to learn that the
//! server validates fields itself (`fieldValidation` on PATCH), so `kubectl apply` and `create
//! -f` validate server-side instead of downloading schemas. No schemas are served: kubectl then
//! computes strategic merge patches from its own types, as it does for built-in kinds.
//! `/openapi/v2` is not served (404), which kubectl accepts once v3 answered.

#![allow(clippy::result_large_err)]

use super::*;
use crate::resource::{GROUPS, RESOURCES};

/// The group-versions the sim has documents for: `api/v1`, `apis/apps/v1`, ...
fn documents() -> Vec<(String, &'static str, &'static str)> {
    let mut out = vec![("api/v1".to_string(), "", "v1")];
    for (g, v) in GROUPS {
        if RESOURCES.iter().any(|d| d.group == *g && d.version == *v) {
            out.push((format!("apis/{g}/{v}"), g, v));
        }
    }
    out
}

fn parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(id: &str, group: &str, version: &str, kind: &str, params: &[&str]) -> Value {
    json!({
        "operationId": id,
        "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
        "parameters": params.iter().map(|p| parameter(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    })
}

fn document(prefix: &str, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for d in RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let scope = if d.namespaced {
            format!("/{prefix}/namespaces/{{namespace}}/{}", d.plural)
        } else {
            format!("/{prefix}/{}", d.plural)
        };
        let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
        let id = |verb: &str| format!("{verb}{}", d.kind);
        paths.insert(
            scope.clone(),
            json!({
                "get": operation(&id("list"), group, version, d.kind, &["labelSelector", "fieldSelector", "watch", "resourceVersion", "limit", "continue", "timeoutSeconds"]),
                "post": operation(&id("create"), group, version, d.kind, &write),
            }),
        );
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({
                "get": operation(&id("read"), group, version, d.kind, &["pretty"]),
                "put": operation(&id("replace"), group, version, d.kind, &write),
                "patch": operation(&id("patch"), group, version, d.kind, &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]),
                "delete": operation(&id("delete"), group, version, d.kind, &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

pub(super) fn serve(path: &[String]) -> Response {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["v3"] => {
            let paths: serde_json::Map<String, Value> = documents()
                .into_iter()
                .map(|(p, _, _)| {
                    let url = format!("/openapi/v3/{p}?hash=sim{}", GIT_VERSION.replace('.', ""));
                    (p, json!({"serverRelativeURL": url}))
                })
                .collect();
            ok(&json!({"paths": paths}))
        }
        ["v3", rest @ ..] => {
            let wanted = rest.join("/");
            match documents().into_iter().find(|(p, _, _)| *p == wanted) {
                Some((p, g, v)) => ok(&document(&p, g, v)),
                None => refused(&ApiError::NotFound {
                    resource: String::new(),
                    name: "the server could not find the requested resource".into(),
                }),
            }
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        ),
    }
}
