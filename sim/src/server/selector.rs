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

/// `labelSelector` and `fieldSelector` of a list request.
pub(super) struct Filter {
    labels: Vec<Term>,
    fields: Vec<Term>,
}

impl Filter {
    pub(super) fn parse(q: &BTreeMap<String, String>) -> Result<Filter, Response> {
        let labels = parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(bad_request)?;
        let fields = parse_selector(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(bad_request)?;
        for f in &fields {
            let key = match f {
                Term::Eq(k, _) | Term::Ne(k, _) => k,
                _ => return Err(bad_request("field selectors support only = and !=".into())),
            };
            const KNOWN: &[&str] = &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
                "spec.unschedulable",
            ];
            if !KNOWN.contains(&key.as_str()) {
                return Err(bad_request(format!("field label not supported: {key}")));
            }
        }
        Ok(Filter { labels, fields })
    }

    pub(super) fn keep(&self, labels: &Labels, field: impl Fn(&str) -> Option<String>) -> bool {
        matches(&self.labels, |k| labels.get(k).cloned()) && matches(&self.fields, field)
    }
}
