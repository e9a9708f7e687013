//! Label and field selectors of list and watch requests, parsed as the apiserver parses them.

#![allow(clippy::result_large_err)]

use super::*;

/// One term of a label or field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// Splits on commas outside parentheses.
pub(super) fn split_terms(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

pub(super) fn parse_selector(s: &str) -> Result<Vec<Term>, String> {
    split_terms(s)
        .into_iter()
        .map(|t| {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("invalid selector term {t:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            if let Some((k, v)) = t.split_once("!=") {
                Ok(Term::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Ok(Term::Eq(k.trim().into(), v.trim().into()))
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Ok(Term::NotIn(k.trim().into(), set(rest)?))
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Ok(Term::In(k.trim().into(), set(rest)?))
            } else if let Some(k) = t.strip_prefix('!') {
                Ok(Term::Absent(k.trim().into()))
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Ok(Term::Exists(t.into()))
            } else {
                Err(format!("unable to parse requirement: {t:?}"))
            }
        })
        .collect()
}

pub(super) fn matches(terms: &[Term], get: impl Fn(&str) -> Option<String>) -> bool {
    terms.iter().all(|t| match t {
        Term::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Term::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Term::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Term::NotIn(k, vs) => !get(k).is_some_and(|x| vs.contains(&x)),
        Term::Exists(k) => get(k).is_some(),
        Term::Absent(k) => get(k).is_none(),
    })
}

/// The fields a resource may be selected by (`fieldSelector`), besides `metadata.name` and
/// `metadata.namespace`, as the apiserver registers them.
fn selectable(res: Res) -> &'static [&'static str] {
    match res {
        Res::Pod => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Res::Node => &["spec.unschedulable"],
        Res::Namespace => &["status.phase"],
        Res::Job => &["status.successful"],
        Res::ReplicaSet => &["status.replicas"],
        Res::Event => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Res::EventV1 => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type",
        ],
        _ => &[],
    }
}

/// A field of an object's JSON as a field selector compares it (absent: its Go zero value).
pub(super) fn field_of(v: &Value, key: &str) -> Option<String> {
    let path = match key {
        "source" => "source.component",
        "status.successful" => "status.succeeded",
        k => k,
    };
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ if key == "spec.unschedulable" || key == "spec.hostNetwork" => "false".into(),
        _ if key == "status.successful" || key == "status.replicas" => "0".into(),
        _ => String::new(),
    })
}

/// `labelSelector` and `fieldSelector` of a list or watch request.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    labels: Vec<Term>,
    fields: Vec<Term>,
}

impl Filter {
    pub(super) fn parse(q: &BTreeMap<String, String>, res: Res) -> Result<Filter, ApiError> {
        let labels = parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::BadRequest)?;
        let fields = parse_selector(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::BadRequest)?;
        for f in &fields {
            let key = match f {
                Term::Eq(k, _) | Term::Ne(k, _) => k,
                _ => {
                    return Err(ApiError::BadRequest(
                        "field selectors support only = and !=".into(),
                    ));
                }
            };
            let known = ["metadata.name", "metadata.namespace"].contains(&key.as_str())
                || selectable(res).contains(&key.as_str());
            if !known {
                return Err(ApiError::BadRequest(format!(
                    "\"{key}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                )));
            }
        }
        Ok(Filter { labels, fields })
    }

    pub(super) fn keep(&self, labels: &Labels, field: impl Fn(&str) -> Option<String>) -> bool {
        matches(&self.labels, |k| labels.get(k).cloned()) && matches(&self.fields, field)
    }

    /// Whether an object (as JSON) passes both selectors.
    pub(super) fn keep_object(&self, v: &Value) -> bool {
        matches(&self.labels, |k| {
            v["metadata"]["labels"][k].as_str().map(str::to_string)
        }) && matches(&self.fields, |k| field_of(v, k))
    }

    /// The node a field selector pins the list to (`spec.nodeName=NODE`, NODE not empty).
    pub(super) fn node_name(&self) -> Option<&str> {
        self.fields.iter().find_map(|t| match t {
            Term::Eq(k, v) if k == "spec.nodeName" && !v.is_empty() => Some(v.as_str()),
            _ => None,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether an object's match can never change over its life: no label terms, and field
    /// terms only on its name and namespace (which never change). A watch resumed with such
    /// a filter needs nothing about what matched before.
    pub(super) fn is_fixed(&self) -> bool {
        self.labels.is_empty()
            && self.fields.iter().all(|t| match t {
                Term::Eq(k, _) | Term::Ne(k, _) => {
                    k == "metadata.name" || k == "metadata.namespace"
                }
                _ => false,
            })
    }
}
