//! Admission: what the apiserver does between reading a request's body and storing the object.
//!
//! - Decoding into the kind's type, with `fieldValidation` (`Strict`: an unknown field is a 400
//!   naming it, as kubectl asks by default; `Warn`, the default: a `Warning` header; `Ignore`).
//! - Metadata: the namespace of the body and of the URL agree and the namespace is open, a name
//!   is given or generated (`generateName`), names and labels are valid.
//! - Per kind (`kinds.rs`, `pods.rs`): the apiserver's defaults, its validation (one field error
//!   per problem, in its words), and on update what may not change.
//!
//! Errors are [`ApiError`]s, which the server writes as `Status` bodies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::World;
use crate::resource::Res;

mod errors;
pub mod kinds;
pub mod pods;

pub use errors::{ApiError, FieldError, Problem, quoted};

/// `?fieldValidation=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<FieldValidation, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other}; valid values are Ignore, Warn and Strict"
            ))),
        }
    }
}

/// The fields of `given` that `known` (the same object decoded and written again) does not have:
/// fields the kind does not know, as `spec.template.spec.containers[0].imagee`.
pub fn unknown_fields(given: &Value, known: &Value) -> Vec<String> {
    fn walk(path: &str, given: &Value, known: &Value, out: &mut Vec<String>) {
        match (given, known) {
            (Value::Object(g), Value::Object(k)) => {
                for (key, v) in g {
                    if v.is_null() {
                        continue;
                    }
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match k.get(key) {
                        Some(kv) => walk(&p, v, kv, out),
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(g), Value::Array(k)) => {
                for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                    walk(&format!("{path}[{i}]"), gv, kv, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", given, known, &mut out);
    out
}

/// The body as `T` (the kind `res` serves), checked as `validation` says. Returns the object
/// and the warnings to send (`Warn`).
pub fn decode<T: DeserializeOwned + serde::Serialize>(
    res: Res,
    body: &Value,
    validation: FieldValidation,
) -> Result<(T, Vec<String>), ApiError> {
    let def = res.def();
    let kind = def.kind;
    let version = res.api_version();
    if !body.is_object() {
        return Err(ApiError::BadRequest(format!(
            "the body of the request is not a {kind} object"
        )));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({k}) does not match the expected kind ({kind})"
        )));
    }
    if let Some(v) = body.get("apiVersion").and_then(Value::as_str)
        && v != version
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({v}) does not match the expected API version ({version})"
        )));
    }
    let mut with_type = body.clone();
    with_type["apiVersion"] = Value::String(version.clone());
    with_type["kind"] = Value::String(kind.into());
    let object: T = serde_path_to_error::deserialize(&with_type).map_err(|e| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: json: cannot decode {}: {}",
            def.version,
            e.path(),
            e.inner()
        ))
    })?;
    let known = serde_json::to_value(&object).map_err(|e| ApiError::Internal(e.to_string()))?;
    let unknown = unknown_fields(&with_type, &known);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {}", quoted(f)))
            .collect();
        match validation {
            FieldValidation::Strict => {
                return Err(ApiError::BadRequest(format!(
                    "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
                    def.version,
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = list,
            FieldValidation::Ignore => {}
        }
    }
    Ok((object, warnings))
}

const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn label_problems(field: &str, s: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push(FieldError::invalid(
            field,
            quoted(s),
            "must be no more than 63 characters",
        ));
    }
    if !is_label(s) {
        out.push(FieldError::invalid(field, quoted(s), LABEL));
    }
    out
}

/// DNS-1123 subdomain: labels joined by dots, at most 253.
pub fn subdomain_problems(field: &str, s: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push(FieldError::invalid(
            field,
            quoted(s),
            "must be no more than 253 characters",
        ));
    }
    if s.is_empty() || !s.split('.').all(is_label) {
        out.push(FieldError::invalid(field, quoted(s), SUBDOMAIN));
    }
    out
}

/// DNS-1035 label (Services): a label that starts with a letter.
pub fn dns1035_problems(field: &str, s: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push(FieldError::invalid(
            field,
            quoted(s),
            "must be no more than 63 characters",
        ));
    }
    if !is_label(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.push(FieldError::invalid(field, quoted(s), DNS1035));
    }
    out
}

/// A label key (`[prefix/]name`) and value, as the apiserver validates them.
pub fn labels_problems(
    field: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<FieldError> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let mut out = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        let (prefix, name) = k
            .rsplit_once('/')
            .map_or((None, k.as_str()), |(p, n)| (Some(p), n));
        let prefix_ok = prefix.is_none_or(|p| subdomain_problems("", p).is_empty());
        if !name_ok(name) || !prefix_ok {
            out.push(FieldError::invalid(
                field,
                quoted(k),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ));
        }
        if !v.is_empty() && !name_ok(v) {
            out.push(FieldError::invalid(
                field.to_string(),
                quoted(v),
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
    out
}

/// The name rule a resource's names follow.
pub fn name_problems(res: Res, name: &str) -> Vec<FieldError> {
    match res {
        Res::Namespace => label_problems("metadata.name", name),
        Res::Service => dns1035_problems("metadata.name", name),
        // Events are named `<object>.<hex>`, ConfigMaps allow '_' and capitals in keys only.
        _ => subdomain_problems("metadata.name", name),
    }
}

/// Metadata checks shared by every create: the body's namespace is the URL's, the namespace is
/// open, a name is given or generated, name and labels are valid. Returns the field errors (for
/// a 422) or a refusal.
pub fn create_meta(
    w: &mut World,
    res: Res,
    url_namespace: Option<&str>,
    m: &mut meta::ObjectMeta,
) -> Result<Vec<FieldError>, ApiError> {
    let def = res.def();
    if def.namespaced {
        let ns = url_namespace.unwrap_or_default();
        match m.namespace.as_deref() {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => m.namespace = Some(ns.to_string()),
        }
        match w.namespace_open(ns) {
            Ok(()) => {}
            Err(crate::model::NamespaceError::Missing(n)) => {
                return Err(ApiError::NotFound {
                    resource: "namespaces".into(),
                    name: n,
                });
            }
            Err(e @ crate::model::NamespaceError::Terminating(_)) => {
                return Err(ApiError::Forbidden {
                    resource: res.qualified(),
                    name: m.name.clone().unwrap_or_default(),
                    detail: e.to_string(),
                });
            }
        }
    } else {
        m.namespace = None;
    }
    let mut errors = Vec::new();
    match (
        m.name.as_deref().filter(|n| !n.is_empty()),
        m.generate_name.as_deref().filter(|g| !g.is_empty()),
    ) {
        (Some(_), _) => {}
        (None, Some(prefix)) => {
            // The apiserver's generator: the prefix (cut to leave room) and 5 random characters.
            let cut: String = prefix.chars().take(58).collect();
            let name = format!("{cut}{}", w.suffix(5));
            m.name = Some(name);
        }
        (None, None) => errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    if let Some(name) = m.name.as_deref().filter(|n| !n.is_empty()) {
        errors.extend(name_problems(res, name));
    }
    errors.extend(labels_problems("metadata.labels", m.labels.as_ref()));
    Ok(errors)
}

/// The refusal of `errors` for object `name` of `res`, if there are any.
pub fn invalid(res: Res, name: &str, errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let def = res.def();
    Err(ApiError::Invalid {
        kind: def.kind.to_string(),
        group: def.group.to_string(),
        name: name.to_string(),
        causes: errors,
    })
}

/// An update's optimistic concurrency: a `resourceVersion` in the body that is not the
/// object's is a conflict.
pub fn check_version(
    res: Res,
    name: &str,
    given: Option<&str>,
    current: &str,
) -> Result<(), ApiError> {
    match given {
        Some(rv) if !rv.is_empty() && rv != current => Err(ApiError::Conflict {
            resource: res.qualified(),
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_by_their_path() {
        let given = json!({"spec": {"replicaz": 3, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}, "metadata": {"creationTimestamp": null}});
        let known = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}, "metadata": {}});
        assert_eq!(
            unknown_fields(&given, &known),
            ["spec.replicaz", "spec.template.spec.containers[0].imagee"]
        );
    }

    #[test]
    fn names_follow_the_apiservers_rules() {
        assert!(subdomain_problems("metadata.name", "web-1.prod").is_empty());
        let e = subdomain_problems("metadata.name", "Bad_Name");
        assert_eq!(
            e[0].to_string(),
            format!("metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN}")
        );
        assert!(!label_problems("metadata.name", "a.b").is_empty());
        assert!(!dns1035_problems("metadata.name", "1web").is_empty());
        assert!(dns1035_problems("metadata.name", "web1").is_empty());
        assert_eq!(label_problems("metadata.name", &"a".repeat(64)).len(), 1);
        let bad = std::collections::BTreeMap::from([("app".to_string(), "no spaces".to_string())]);
        assert_eq!(labels_problems("metadata.labels", Some(&bad)).len(), 1);
    }

    #[test]
    fn field_validation_reads_its_three_words() {
        assert_eq!(FieldValidation::parse(None), Ok(FieldValidation::Warn));
        assert_eq!(
            FieldValidation::parse(Some("Strict")),
            Ok(FieldValidation::Strict)
        );
        assert!(FieldValidation::parse(Some("strict")).is_err());
    }

    #[test]
    fn an_invalid_status_reads_like_the_apiservers() {
        let e = invalid(
            Res::Budget,
            "nginx-pdb",
            vec![FieldError::invalid(
                "spec",
                "{...}",
                "minAvailable and maxUnavailable cannot be both set",
            )],
        )
        .expect_err("invalid");
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(
            s["message"],
            "PodDisruptionBudget.policy \"nginx-pdb\" is invalid: spec: Invalid value: {...}: minAvailable and maxUnavailable cannot be both set"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(s["details"]["causes"][0]["field"], "spec");
    }
}
