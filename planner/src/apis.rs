//! The removed-API gate: what the cluster was seen using (`ApiUsage`) against the table of
//! removed APIs (`upgraded_events::apis`), hop by hop; and the parsers of the three sources
//! (an apiserver's `/metrics` text, Helm 3 release Secrets, last-applied annotations).

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use serde_json::Value;
use upgraded_events::Version;
use upgraded_events::apis::{
    ApiUsage, ApiserverApis, DeprecatedSeries, ManifestObject, removed_kind,
};

use crate::{Ctx, Severity, finding};

/// Less than this much traffic behind an apiserver's counters is a warning of its own.
pub const SHORT_WINDOW_SECS: u64 = 24 * 3600;

/// A source that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiSourceError {
    #[error("line {line}: {what}")]
    Metrics { line: usize, what: String },
    #[error(
        "this is not an apiserver's /metrics: no apiserver_request_total series (read it from each instance: `kubectl get --raw /metrics --server https://NODE:6443`)"
    )]
    NotApiserver,
    #[error("the Helm secrets are not JSON: {0}")]
    HelmJson(String),
    #[error(
        "the Helm secrets are not a Secret or a List of them (`kubectl get secrets -A -l owner=helm,status=deployed -o json`)"
    )]
    HelmNotSecrets,
    #[error("secret {secret}: {what}")]
    HelmRelease { secret: String, what: String },
}

/// A sample: its metric name, labels and value.
type Sample<'a> = (&'a str, BTreeMap<String, String>, f64);

/// One line of Prometheus text: a sample, or nothing (a comment, a blank line).
fn sample(line: &str) -> Result<Option<Sample<'_>>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a metric without a value")?;
    let name = &line[..name_end];
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(i, c)) = chars.peek() else {
                return Err("labels not closed with '}'".into());
            };
            if c == '}' {
                end = i + 1;
                break;
            }
            let key_start = i;
            let mut key_end = None;
            for (j, c) in chars.by_ref() {
                if c == '=' {
                    key_end = Some(j);
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    return Err(match labels.keys().last() {
                        Some(k) => format!("labels not closed with '}}' after label {k:?}"),
                        None => format!("{c:?} in a label name"),
                    });
                }
            }
            let Some(key_end) = key_end else {
                return Err(match labels.keys().last() {
                    Some(k) => format!("labels not closed with '}}' after label {k:?}"),
                    None => "a label without '='".into(),
                });
            };
            let key = r[key_start..key_end].trim().to_string();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?}: its value is not quoted"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label {key:?}: its value is not closed"));
            }
            labels.insert(key, value);
        }
        rest = &r[end..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("a sample without a value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("{v:?} is not a sample value"))?,
    };
    Ok(Some((name, labels, value)))
}

/// One apiserver instance's `/metrics` text, read at `read_at` (Unix seconds): its
/// deprecated-API series, each with the requests counted for it, and how long it had been
/// up.
pub fn parse_metrics(
    instance: &str,
    text: &str,
    read_at: i64,
) -> Result<ApiserverApis, ApiSourceError> {
    let mut deprecated: Vec<DeprecatedSeries> = Vec::new();
    let mut requests: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    let mut started: Option<f64> = None;
    let mut is_apiserver = false;
    for (i, line) in text.lines().enumerate() {
        let Some((name, labels, value)) =
            sample(line).map_err(|what| ApiSourceError::Metrics { line: i + 1, what })?
        else {
            continue;
        };
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let key = || {
            (
                label("group"),
                label("version"),
                label("resource"),
                label("subresource"),
            )
        };
        match name {
            "apiserver_requested_deprecated_apis" if value >= 1.0 => {
                let (group, version, resource, subresource) = key();
                deprecated.push(DeprecatedSeries {
                    group,
                    version,
                    resource,
                    subresource,
                    removed_release: label("removed_release"),
                    requests: 0,
                });
            }
            "apiserver_request_total" => {
                is_apiserver = true;
                if value.is_finite() && value > 0.0 {
                    *requests.entry(key()).or_default() += value as u64;
                }
            }
            "process_start_time_seconds" => started = Some(value),
            _ => {}
        }
    }
    if !is_apiserver {
        return Err(ApiSourceError::NotApiserver);
    }
    for s in &mut deprecated {
        let key = (
            s.group.clone(),
            s.version.clone(),
            s.resource.clone(),
            s.subresource.clone(),
        );
        s.requests = requests.get(&key).copied().unwrap_or(0);
    }
    deprecated.sort_by_key(DeprecatedSeries::name);
    deprecated.dedup();
    let up_secs = started
        .filter(|s| s.is_finite())
        .map(|s| (read_at as f64 - s).max(0.0) as u64);
    Ok(ApiserverApis {
        instance: instance.to_string(),
        deprecated,
        up_secs,
    })
}

/// A Helm 3 release as its Secret holds it: `data.release` is base64 (the API's encoding)
/// of base64 (Helm's) of gzip of the release's JSON.
fn helm_release(secret: &Value) -> Result<Value, String> {
    let data = secret["data"]["release"]
        .as_str()
        .ok_or("no data.release")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let helm = b64
        .decode(data.trim())
        .map_err(|e| format!("data.release is not base64: {e}"))?;
    let raw = b64
        .decode(helm.trim_ascii())
        .map_err(|e| format!("the release is not Helm's base64: {e}"))?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(256 << 20)
            .read_to_end(&mut out)
            .map_err(|e| format!("the release is not valid gzip: {e}"))?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).map_err(|e| format!("the release is not JSON: {e}"))
}

/// The objects of deployed Helm 3 releases (`kubectl get secrets -A -l
/// owner=helm,status=deployed -o json`) at an API version some release removes.
pub fn helm_objects(text: &str) -> Result<Vec<ManifestObject>, ApiSourceError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| ApiSourceError::HelmJson(e.to_string()))?;
    let secrets: Vec<&Value> = match (v["kind"].as_str(), v["items"].as_array()) {
        (Some(k), Some(items)) if k.ends_with("List") => items.iter().collect(),
        (Some("Secret"), _) => vec![&v],
        _ => return Err(ApiSourceError::HelmNotSecrets),
    };
    let mut out = Vec::new();
    for s in secrets {
        let labels = &s["metadata"]["labels"];
        if s["kind"].as_str().is_some_and(|k| k != "Secret")
            || labels["owner"] != "helm"
            || labels["status"] != "deployed"
        {
            continue;
        }
        let secret = format!(
            "{}/{}",
            s["metadata"]["namespace"].as_str().unwrap_or_default(),
            s["metadata"]["name"].as_str().unwrap_or_default()
        );
        let release = helm_release(s).map_err(|what| ApiSourceError::HelmRelease {
            secret: secret.clone(),
            what,
        })?;
        let name = release["name"].as_str().unwrap_or_default();
        let namespace = release["namespace"].as_str().unwrap_or_default();
        let manifest = release["manifest"].as_str().unwrap_or_default();
        for doc in manifest.split("\n---") {
            // A document Helm could not have applied is not an object it deployed.
            let Ok(obj) = serde_yaml::from_str::<serde_yaml::Value>(doc) else {
                continue;
            };
            let field = |k: &str| obj.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let meta = |k: &str| {
                obj.get("metadata")
                    .and_then(|m| m.get(k))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let (api_version, kind) = (field("apiVersion"), field("kind"));
            if removed_kind(api_version, kind).is_none() {
                continue;
            }
            let ns = meta("namespace");
            out.push(ManifestObject {
                source: format!("helm release {namespace}/{name}"),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                namespace: if ns.is_empty() {
                    namespace.to_string()
                } else {
                    ns
                },
                name: meta("name"),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The release a hop ends at, and where it starts from, for each hop of `path`.
fn hops(from: Version, path: &[Version]) -> Vec<(Version, Version)> {
    std::iter::once(from)
        .chain(path.iter().copied())
        .zip(path.iter().copied())
        .collect()
}

/// The first hop of `path` whose target no longer serves what was removed in `minor`.
fn first_hop_removing(hops: &[(Version, Version)], minor: u32) -> Option<&(Version, Version)> {
    hops.iter().find(|(_, to)| u32::from(to.minor) >= minor)
}

fn minor(v: &Version) -> String {
    format!("{}.{}", v.major, v.minor)
}

impl Ctx<'_> {
    /// The removed-API gate, hop by hop: an apiserver that served an API a hop's target no
    /// longer serves blocks; counters covering less than a day warn; Helm releases and
    /// last-applied objects at such a version warn.
    pub(crate) fn api_findings(&mut self, from: Version, path: &[Version]) {
        let usage: &ApiUsage = &self.inv.api_usage;
        if usage.is_empty() {
            return;
        }
        let hops = hops(from, path);
        let mut found = Vec::new();
        for a in &usage.apiservers {
            for s in &a.deprecated {
                let Some(m) = s.removed_in() else { continue };
                let Some((hop_from, hop_to)) = first_hop_removing(&hops, m) else {
                    continue;
                };
                let replacement =
                    upgraded_events::apis::removed_resource(&s.group, &s.version, &s.resource)
                        .map_or_else(
                            || "the API's newer version".to_string(),
                            |r| r.replacement.to_string(),
                        );
                found.push(finding(
                    Severity::Blocker,
                    "removed-api-in-use",
                    vec![format!("apiserver/{}", a.instance)],
                    format!(
                        "apiserver {} served {} request(s) to {}, which 1.{m} no longer serves: the hop {} → {} would break whatever sends them",
                        a.instance,
                        s.requests,
                        s.name(),
                        minor(hop_from),
                        minor(hop_to),
                    ),
                    format!(
                        "find the client (the audit log names its user agent) and move it to {replacement}; its counters start again when the apiserver restarts"
                    ),
                ));
            }
            if let Some(up) = a.up_secs.filter(|&u| u < SHORT_WINDOW_SECS) {
                found.push(finding(
                    Severity::Warning,
                    "apiserver-short-window",
                    vec![format!("apiserver/{}", a.instance)],
                    format!(
                        "apiserver {} had been up for {}h{:02}m when its metrics were read: its deprecated-API counters have seen little traffic (a nightly or weekly job may not have run)",
                        a.instance,
                        up / 3600,
                        (up % 3600) / 60
                    ),
                    "read its /metrics again after a day of traffic, or search the audit log for the removed versions".into(),
                ));
            }
        }
        for (objects, code, fix) in [
            (
                &usage.helm,
                "helm-removed-api",
                "upgrade the chart to a version that uses the replacement, or rewrite the release's stored manifest (`helm mapkubeapis`) so Helm can still upgrade it",
            ),
            (
                &usage.applied,
                "last-applied-removed-api",
                "apply the object again from a manifest at the replacement version, so its last-applied configuration (and the next `kubectl apply`) no longer names the removed one",
            ),
        ] {
            for o in objects {
                let Some(r) = removed_kind(&o.api_version, &o.kind) else {
                    continue;
                };
                let Some((hop_from, hop_to)) = first_hop_removing(&hops, r.removed_in) else {
                    continue;
                };
                found.push(finding(
                    Severity::Warning,
                    code,
                    vec![format!(
                        "{}/{}/{}",
                        o.kind.to_lowercase(),
                        o.namespace,
                        o.name
                    )],
                    format!(
                        "{} declares {} {}/{} at {}, which 1.{} no longer serves (hop {} → {}); use {}",
                        o.source,
                        o.kind,
                        o.namespace,
                        o.name,
                        o.api_version,
                        r.removed_in,
                        minor(hop_from),
                        minor(hop_to),
                        r.replacement
                    ),
                    fix.into(),
                ));
            }
        }
        for why in &usage.unread {
            found.push(finding(
                Severity::Warning,
                "api-usage-unread",
                vec![],
                format!("the removed-API gate could not read {why}"),
                "read that source by hand (`kubectl get --raw /metrics --server https://NODE:6443`) and pass it to `upgradectl plan --apiserver-metrics`".into(),
            ));
        }
        for f in found {
            self.findings.insert(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const CP2: &str = include_str!("../tests/fixtures/apiserver-metrics-cp-2.txt");
    const STARTED: i64 = 1_764_065_600;

    #[test]
    fn a_real_metrics_sample_gives_the_series_their_requests_and_the_window() {
        let a = parse_metrics("cp-2", CP2, STARTED + 3 * 3600 + 5 * 60).expect("metrics");
        assert_eq!(a.instance, "cp-2");
        assert_eq!(a.up_secs, Some(3 * 3600 + 5 * 60));
        let names: Vec<(String, u64, Option<u32>)> = a
            .deprecated
            .iter()
            .map(|s| (s.name(), s.requests, s.removed_in()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "autoscaling/v1 horizontalpodautoscalers".to_string(),
                    0,
                    None
                ),
                (
                    "flowcontrol.apiserver.k8s.io/v1beta3 flowschemas".to_string(),
                    42,
                    Some(32)
                ),
            ]
        );
    }

    #[test]
    fn metrics_that_are_not_an_apiservers_or_not_prometheus_are_refused_by_line() {
        let e = parse_metrics("x", "# just a comment\nnode_load1 0.5\n", 0).expect_err("refused");
        assert_eq!(e, ApiSourceError::NotApiserver);
        let e =
            parse_metrics("x", "apiserver_request_total{code=\"200\" 3\n", 0).expect_err("refused");
        assert!(
            matches!(&e, ApiSourceError::Metrics { line: 1, what } if what.contains("code")),
            "{e}"
        );
        let e = parse_metrics("x", "ok 1\n<html>\n", 0).expect_err("refused");
        assert!(matches!(e, ApiSourceError::Metrics { line: 2, .. }), "{e}");
        let e = parse_metrics("x", "apiserver_request_total{} many\n", 0).expect_err("refused");
        assert!(e.to_string().contains("\"many\""), "{e}");
    }

    /// A Helm 3 release Secret as `kubectl get secret -o json` shows it: the release's JSON,
    /// gzipped, base64 (Helm's encoding), base64 again (the API's, for `data`).
    pub(crate) fn helm_secret(ns: &str, release: &str, manifest: &str, status: &str) -> Value {
        let json = serde_json::json!({
            "name": release, "namespace": ns, "version": 3,
            "info": {"status": status},
            "manifest": manifest,
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.to_string().as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let b64 = base64::engine::general_purpose::STANDARD;
        let helm = b64.encode(gz);
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {
                "namespace": ns, "name": format!("sh.helm.release.v1.{release}.v3"),
                "labels": {"owner": "helm", "status": status, "name": release, "version": "3"},
            },
            "data": {"release": b64.encode(helm)},
        })
    }

    const MANIFEST: &str = "---\n# Source: web/templates/pdb.yaml\napiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 1\n---\n# Source: web/templates/deploy.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\napiVersion: flowcontrol.apiserver.k8s.io/v1beta3\nkind: FlowSchema\nmetadata:\n  name: web-batch\n";

    #[test]
    fn helm_release_secrets_are_decoded_as_helm_writes_them() {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            helm_secret("prod", "web", MANIFEST, "deployed"),
            helm_secret("prod", "old", MANIFEST, "superseded"),
        ]});
        let objects = helm_objects(&list.to_string()).expect("helm");
        let seen: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{} {} {} {}/{}",
                    o.source, o.api_version, o.kind, o.namespace, o.name
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                "helm release prod/web flowcontrol.apiserver.k8s.io/v1beta3 FlowSchema prod/web-batch",
                "helm release prod/web policy/v1beta1 PodDisruptionBudget prod/web",
            ]
        );
    }

    #[test]
    fn a_damaged_helm_secret_is_named() {
        let mut s = helm_secret("prod", "web", MANIFEST, "deployed");
        s["data"]["release"] = Value::from("bm90IGd6aXA=");
        let e = helm_objects(&s.to_string()).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("secret prod/sh.helm.release.v1.web.v3: "),
            "{e}"
        );
        assert_eq!(
            helm_objects("{\"kind\": \"Pod\"}").expect_err("refused"),
            ApiSourceError::HelmNotSecrets
        );
        assert!(matches!(
            helm_objects("nope").expect_err("refused"),
            ApiSourceError::HelmJson(_)
        ));
    }

    /// Table-driven by target: the hop that first reaches the removal is the one named.
    #[test]
    fn the_hop_that_reaches_a_removal_is_the_one_blocked() {
        let v = |m: u16| Version::new(1, m, 0);
        for (from, path, removed, expect) in [
            (v(31), vec![v(32)], 32, Some((31, 32))),
            (v(30), vec![v(31)], 32, None),
            (v(30), vec![v(31), v(32), v(33)], 32, Some((31, 32))),
            (v(28), vec![v(29), v(30)], 29, Some((28, 29))),
            (v(32), vec![v(33), v(34), v(35)], 32, Some((32, 33))),
            (v(33), vec![v(34), v(35)], 36, None),
        ] {
            let hops = hops(from, &path);
            let got = first_hop_removing(&hops, removed).map(|(a, b)| (a.minor, b.minor));
            assert_eq!(
                got, expect,
                "from {from} via {path:?}, removed in 1.{removed}"
            );
        }
    }
}
