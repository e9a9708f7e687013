//! Drift within a hardware generation: each node's fingerprint, the majority value of each
//! field across its generation and the nodes that differ. A canary proves its generation
//! only for the nodes that are like it; an outlier in a field that must match is not proven
//! by it, one in a field that should match (a kernel patch, an OS point release) is a
//! warning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inventory::NodeInv;

/// How much a field's difference matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Match {
    /// The canary proves nothing about a node that differs (cgroup, container runtime).
    Must,
    /// A difference worth knowing (kernel, OS image).
    Should,
}

/// The fields a fingerprint holds, with how much each matters. What the inventory shows of
/// a node; the node's own preflight adds more (config hashes, kubelet config keys).
pub const FIELDS: &[(&str, Match)] = &[
    ("cgroup", Match::Must),
    ("container-runtime", Match::Must),
    ("kernel", Match::Should),
    ("os-image", Match::Should),
];

/// A node's values of [`FIELDS`], by field.
pub type Fingerprint = BTreeMap<String, String>;

/// The nodes of each generation with their fingerprints.
pub type Generations = BTreeMap<String, Vec<(String, Fingerprint)>>;

/// A node's values of [`FIELDS`] (a field it does not report is left out).
pub fn fingerprint(n: &NodeInv) -> Fingerprint {
    let mut f = BTreeMap::new();
    if let Some(c) = n.cgroup {
        f.insert("cgroup".into(), format!("v{c}"));
    }
    for (k, v) in [
        ("container-runtime", &n.runtime),
        ("kernel", &n.kernel),
        ("os-image", &n.os_image),
    ] {
        if !v.is_empty() {
            f.insert(k.to_string(), v.clone());
        }
    }
    f
}

/// One field of a generation: its majority value and the nodes that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDrift {
    pub field: String,
    #[serde(rename = "match")]
    pub level: Match,
    pub majority: String,
    /// (node, its value), by node name.
    pub outliers: Vec<(String, String)>,
}

/// A generation's drift: its fields with outliers (a generation without is not listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    pub generation: String,
    pub nodes: usize,
    pub fields: Vec<FieldDrift>,
}

impl DriftReport {
    /// The nodes that differ from the majority in a field of `level` (any field: `None`).
    pub fn outliers(&self, level: Option<Match>) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .fields
            .iter()
            .filter(|f| level.is_none_or(|l| f.level == l))
            .flat_map(|f| f.outliers.iter().map(|(n, _)| n.as_str()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The drift of each generation, from its nodes' fingerprints (`generation → [(node,
/// fingerprint)]`). The majority is the most common value (ties: the smallest, so the
/// report is the same every time); a generation of one or two nodes has no majority to
/// differ from and is not judged.
pub fn drift(generations: &Generations) -> Vec<DriftReport> {
    let mut out = Vec::new();
    for (g, nodes) in generations {
        if nodes.len() < 3 {
            continue;
        }
        let mut fields = Vec::new();
        for &(field, level) in FIELDS {
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, f) in nodes {
                if let Some(v) = f.get(field) {
                    *count.entry(v.as_str()).or_default() += 1;
                }
            }
            let Some((majority, _)) = count
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(v, n)| (v.to_string(), *n))
            else {
                continue;
            };
            let mut outliers: Vec<(String, String)> = nodes
                .iter()
                .filter_map(|(n, f)| {
                    f.get(field)
                        .filter(|v| **v != majority)
                        .map(|v| (n.clone(), v.clone()))
                })
                .collect();
            outliers.sort();
            if !outliers.is_empty() {
                fields.push(FieldDrift {
                    field: field.to_string(),
                    level,
                    majority,
                    outliers,
                });
            }
        }
        if !fields.is_empty() {
            out.push(DriftReport {
                generation: g.clone(),
                nodes: nodes.len(),
                fields,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(kernel: &str, cgroup: &str) -> Fingerprint {
        [
            ("kernel", kernel),
            ("cgroup", cgroup),
            ("container-runtime", "containerd://1.7.24"),
            ("os-image", "Debian GNU/Linux 12 (bookworm)"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Six nodes of one generation: one with another kernel (should match: a warning), one
    /// on cgroup v1 (must match); the majority is what the other four run.
    #[test]
    fn a_kernel_outlier_and_a_cgroup_outlier_in_six_nodes() {
        let mut nodes = Vec::new();
        for i in 1..=6 {
            let kernel = if i == 3 {
                "6.1.0-27-amd64"
            } else {
                "6.1.0-25-amd64"
            };
            let cgroup = if i == 5 { "v1" } else { "v2" };
            nodes.push((format!("r640-0{i}"), fp(kernel, cgroup)));
        }
        let report = drift(&[("dell-r640".to_string(), nodes)].into());
        assert_eq!(report.len(), 1);
        let r = &report[0];
        assert_eq!(r.nodes, 6);
        assert_eq!(r.outliers(Some(Match::Must)), ["r640-05"]);
        assert_eq!(r.outliers(Some(Match::Should)), ["r640-03"]);
        assert_eq!(r.outliers(None), ["r640-03", "r640-05"]);
        let kernel = r
            .fields
            .iter()
            .find(|f| f.field == "kernel")
            .expect("kernel");
        assert_eq!(kernel.majority, "6.1.0-25-amd64");
        assert_eq!(
            kernel.outliers,
            [("r640-03".to_string(), "6.1.0-27-amd64".to_string())]
        );
    }

    #[test]
    fn alike_or_small_generations_have_no_report() {
        let same: Vec<_> = (1..=4)
            .map(|i| (format!("n{i}"), fp("6.1", "v2")))
            .collect();
        assert!(drift(&[("g".to_string(), same)].into()).is_empty());
        let two = vec![
            ("a".to_string(), fp("6.1", "v2")),
            ("b".to_string(), fp("6.2", "v1")),
        ];
        assert!(drift(&[("g".to_string(), two)].into()).is_empty());
        // A tie takes the smallest value as the majority, every time.
        let tie: Vec<_> = [("a", "6.2"), ("b", "6.1"), ("c", "6.2"), ("d", "6.1")]
            .iter()
            .map(|(n, k)| (n.to_string(), fp(k, "v2")))
            .collect();
        let r = drift(&[("g".to_string(), tie)].into());
        assert_eq!(r[0].fields[0].majority, "6.1");
    }
}
