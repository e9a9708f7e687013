//! PATCH bodies, as the apiserver applies them: JSON patch (RFC 6902), JSON merge patch (RFC
//! 7386), and strategic merge patch, which `kubectl apply`, `cordon`, `set image` and `rollout
//! restart` send.
//!
//! A strategic merge patch merges lists of objects by a key (containers by `name`, a
//! container's ports by `containerPort`, a Service's by `port`, ...) instead of replacing them,
//! as each field's `patchMergeKey` says; the keys are the table [`MERGE_KEYS`]. Its directives:
//! `$patch: replace | delete | merge` (on an object or a list item), `$setElementOrder/<list>`,
//! `$deleteFromPrimitiveList/<list>`, `$retainKeys`, and `null` to delete a field. A list with
//! no merge key is replaced; `finalizers` merges as a set of strings.

use serde_json::{Map, Value};

/// The lists merged by a key, by field name; `(field, parent, key)` where `parent` is the
/// object that holds the list when the same name means different lists (`ports`).
pub const MERGE_KEYS: &[(&str, Option<&str>, &str)] = &[
    ("containers", None, "name"),
    ("initContainers", None, "name"),
    ("ephemeralContainers", None, "name"),
    ("volumes", None, "name"),
    ("volumeMounts", None, "mountPath"),
    ("volumeDevices", None, "devicePath"),
    ("env", None, "name"),
    ("imagePullSecrets", None, "name"),
    ("ownerReferences", None, "uid"),
    ("conditions", None, "type"),
    ("hostAliases", None, "ip"),
    ("resourceClaims", None, "name"),
    ("topologySpreadConstraints", None, "topologyKey"),
    ("addresses", None, "type"),
    // A container's ports, and a Service's.
    ("ports", Some("container"), "containerPort"),
    ("ports", Some("service"), "port"),
];

/// Lists of strings merged as sets.
const MERGED_STRINGS: &[&str] = &["finalizers"];

/// Why a patch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Invalid(String),
}

/// The merge key of list `field` inside an object at `path` (the object's own field names).
fn merge_key(field: &str, path: &[String]) -> Option<&'static str> {
    let parent = if field == "ports" {
        // A container's ports (under containers/initContainers) or a Service's (spec.ports).
        let in_container = path
            .iter()
            .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
        Some(if in_container { "container" } else { "service" })
    } else {
        None
    };
    MERGE_KEYS
        .iter()
        .find(|(f, p, _)| *f == field && (p.is_none() || *p == parent))
        .map(|(_, _, k)| *k)
}

/// Applies a strategic merge patch to `doc`.
pub fn strategic(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    merge_object(doc, patch, &mut Vec::new())
}

fn merge_object(doc: &mut Value, patch: &Value, path: &mut Vec<String>) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = p.clone();
            replaced.remove("$patch");
            *doc = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *doc = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::Invalid(format!("Unknown patch type: {other}"))),
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else {
        return Ok(());
    };
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        d.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    // Orders to apply after the merge.
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (key, value) in p {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(list) = key.strip_prefix("$setElementOrder/") {
            if let Value::Array(order) = value {
                orders.push((list.to_string(), order.clone()));
            }
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(have)), Value::Array(gone)) = (d.get_mut(list), value) {
                have.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if value.is_null() {
            d.remove(key);
            continue;
        }
        path.push(key.clone());
        let result = match value {
            Value::Object(_) => {
                let slot = d.entry(key.clone()).or_insert(Value::Null);
                merge_object(slot, value, path)?;
                if slot.is_null() {
                    d.remove(key);
                }
                Ok(())
            }
            Value::Array(items) => {
                let slot = d.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, key, path)
            }
            scalar => {
                d.insert(key.clone(), scalar.clone());
                Ok(())
            }
        };
        path.pop();
        result?;
    }
    for (list, order) in orders {
        if let Some(Value::Array(items)) = d.get_mut(&list) {
            reorder(items, &order, merge_key(&list, path));
        }
    }
    Ok(())
}

fn merge_list(
    slot: &mut Value,
    items: &[Value],
    field: &str,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    // `[{"$patch": "replace"}, ...]`: the list is replaced by the rest.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *slot = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    }
    if MERGED_STRINGS.contains(&field) {
        let Value::Array(have) = slot else {
            *slot = Value::Array(items.to_vec());
            return Ok(());
        };
        for i in items {
            if !have.contains(i) {
                have.push(i.clone());
            }
        }
        return Ok(());
    }
    let Some(key) = merge_key(field, path) else {
        *slot = Value::Array(items.to_vec());
        return Ok(());
    };
    let Value::Array(have) = slot else {
        *slot = Value::Array(items.to_vec());
        return Ok(());
    };
    for item in items {
        let Some(k) = item.get(key) else {
            return Err(PatchError::Invalid(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let at = have.iter().position(|h| h.get(key) == Some(k));
        match (item.get("$patch").and_then(Value::as_str), at) {
            (Some("delete"), Some(i)) => {
                have.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => merge_object(&mut have[i], item, path)?,
            (_, None) => {
                let mut new = Value::Null;
                merge_object(&mut new, item, path)?;
                have.push(new);
            }
        }
    }
    Ok(())
}

/// Puts `items` in the order of `order` (by merge key); items the order does not name keep
/// their place after the named ones.
fn reorder(items: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let position = |v: &Value| {
        order.iter().position(|o| match key {
            Some(k) => o.get(k).is_some() && o.get(k) == v.get(k),
            None => o == v,
        })
    };
    let mut indexed: Vec<(usize, Value)> = items.drain(..).enumerate().collect();
    indexed.sort_by_key(|(i, v)| (position(v).unwrap_or(usize::MAX), *i));
    items.extend(indexed.into_iter().map(|(_, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(doc: Value, patch: Value, want: Value) {
        let mut d = doc;
        strategic(&mut d, &patch).expect("applies");
        assert_eq!(d, want);
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        check(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"unschedulable": true}}),
            json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {"unschedulable": null}}),
            json!({"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {}}),
        );
    }

    #[test]
    fn containers_merge_by_name_and_ports_by_their_keys() {
        check(
            json!({"spec": {"containers": [{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}, {"name": "side", "image": "b"}]}}),
            json!({"spec": {"containers": [{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 443}]}]}}),
            json!({"spec": {"containers": [{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]}, {"name": "side", "image": "b"}]}}),
        );
        // A Service's ports merge by `port`.
        check(
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}),
        );
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced() {
        check(
            json!({"spec": {"tolerations": [{"key": "a"}], "command": ["sh"]}}),
            json!({"spec": {"tolerations": [{"key": "b"}], "command": ["bash", "-c"]}}),
            json!({"spec": {"tolerations": [{"key": "b"}], "command": ["bash", "-c"]}}),
        );
    }

    #[test]
    fn directives() {
        // Delete a list item, replace a map, replace a list.
        check(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}], "strategy": {"$patch": "replace", "type": "Recreate"}}}),
            json!({"spec": {"containers": [{"name": "b"}], "strategy": {"type": "Recreate"}}}),
        );
        check(
            json!({"spec": {"volumes": [{"name": "x"}, {"name": "y"}]}}),
            json!({"spec": {"volumes": [{"$patch": "replace"}, {"name": "z"}]}}),
            json!({"spec": {"volumes": [{"name": "z"}]}}),
        );
        // The order kubectl apply sends, and a retained-keys strategy.
        check(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "x"}]}}),
            json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "image": "x"}]}}),
        );
        check(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
            json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
            json!({"strategy": {"type": "Recreate"}}),
        );
        // Strings removed from a primitive list, finalizers merged as a set.
        check(
            json!({"metadata": {"finalizers": ["a", "b"]}, "args": ["x", "y"]}),
            json!({"metadata": {"finalizers": ["b", "c"]}, "$deleteFromPrimitiveList/args": ["x"]}),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}, "args": ["y"]}),
        );
    }

    #[test]
    fn a_list_item_without_its_merge_key_is_refused() {
        let mut d = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(strategic(&mut d, &json!({"spec": {"containers": [{"image": "x"}]}})).is_err());
    }
}
