//! What the daemon's Kubernetes identity must be allowed to do for a run, asked of the API
//! server (SelfSubjectAccessReview) before the run records its plan, so a missing right
//! refuses the start instead of halting the run after its first node was touched.

use serde::{Deserialize, Serialize};

use crate::policy::PlanPolicy;

/// One verb on one resource, as RBAC spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub verb: String,
    /// API group, `""` for the core group.
    pub group: String,
    pub resource: String,
    /// `""` when none (`eviction`, `scale`).
    pub subresource: String,
    /// What the run needs it for, for the refusal's message.
    pub why: String,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.verb)?;
        f.write_str(&self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        write!(f, " ({})", self.why)
    }
}

fn p(verb: &str, group: &str, resource: &str, subresource: &str, why: &str) -> Permission {
    Permission {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        why: why.into(),
    }
}

/// Every permission a run under `policy` uses, in the order a refusal lists them.
pub fn required(policy: &PlanPolicy) -> Vec<Permission> {
    let mut out = vec![
        p("list", "", "nodes", "", "inventory"),
        p("get", "", "nodes", "", "node readiness and versions"),
        p("patch", "", "nodes", "", "cordon and uncordon"),
        p("list", "", "pods", "", "inventory, drains and health gates"),
        p(
            "create",
            "",
            "pods",
            "eviction",
            "drains through the Eviction API",
        ),
        p("list", "policy", "poddisruptionbudgets", "", "inventory"),
        p(
            "get",
            "policy",
            "poddisruptionbudgets",
            "",
            "drains waiting on a budget",
        ),
        p("list", "apps", "deployments", "", "inventory"),
        p("list", "apps", "statefulsets", "", "inventory"),
        p("list", "apps", "daemonsets", "", "inventory"),
        p("list", "apps", "replicasets", "", "pod owners"),
        p(
            "get",
            "",
            "nodes",
            "proxy",
            "drift: each kubelet's /configz",
        ),
        p(
            "get",
            "",
            "configmaps",
            "",
            "kube-proxy's mode and kubeadm's configuration (kube-system)",
        ),
    ];
    if policy.scale_up_to_unblock {
        out.push(p(
            "get",
            "apps",
            "deployments",
            "scale",
            "drain.scaleUpToUnblock",
        ));
        out.push(p(
            "update",
            "apps",
            "deployments",
            "scale",
            "drain.scaleUpToUnblock",
        ));
        out.push(p(
            "get",
            "apps",
            "replicasets",
            "",
            "drain.scaleUpToUnblock",
        ));
    }
    use upgraded_events::check::Boundary;
    if policy.runs_node_checks(Boundary::AfterCanary)
        || policy.runs_node_checks(Boundary::AfterBatch)
    {
        let why = "node checks (probe pods in namespace upgraded-checks)";
        out.extend([
            p("get", "", "namespaces", "", why),
            p("create", "", "namespaces", "", why),
            p("create", "", "pods", "", why),
            p("get", "", "pods", "", why),
            p("delete", "", "pods", "", why),
        ]);
        let dns_on = upgraded_events::check::catalog(
            &policy.checks,
            &upgraded_events::check::ClusterHas::everything(&policy.checks),
        )
        .is_ok_and(|(on, _)| {
            on.iter()
                .any(|c| c.kind == upgraded_events::check::CheckKind::Dns)
        });
        if dns_on {
            let why = "the DNS check (a probe Service in namespace upgraded-checks)";
            out.extend([
                p("create", "", "services", "", why),
                p("get", "", "services", "", why),
                p("delete", "", "services", "", why),
            ]);
        }
    }
    let run_checks = |b| policy.runs_run_checks(b);
    if [
        Boundary::Preflight,
        Boundary::AfterControlPlane,
        Boundary::AfterCanary,
        Boundary::AfterBatch,
        Boundary::Final,
    ]
    .into_iter()
    .any(run_checks)
    {
        let why = "the cluster's checks (scheduling and operators' Jobs in namespace upgraded-checks, the addons' images)";
        out.extend([
            p("get", "", "namespaces", "", why),
            p("create", "", "namespaces", "", why),
            p("create", "batch", "jobs", "", why),
            p("get", "batch", "jobs", "", why),
            p("delete", "batch", "jobs", "", why),
            p("list", "", "pods", "", why),
            p("get", "apps", "daemonsets", "", why),
            p("get", "apps", "deployments", "", why),
        ]);
    }
    if !policy.checks.storage_classes.is_empty() {
        let why = "storage checks (claims in namespace upgraded-checks)";
        out.extend([
            p("list", "storage.k8s.io", "storageclasses", "", why),
            p("create", "", "persistentvolumeclaims", "", why),
            p("delete", "", "persistentvolumeclaims", "", why),
        ]);
    }
    // Asked once each, where first needed.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|p| seen.insert(p.to_string()));
    out
}

/// The permissions of `required` whose answer was "no" (`allowed[i]` answers `required[i]`).
pub fn missing(required: &[Permission], allowed: &[bool]) -> Vec<Permission> {
    required
        .iter()
        .zip(allowed.iter().copied().chain(std::iter::repeat(false)))
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| p.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_rights_are_asked_only_when_the_policy_scales() {
        let plain = required(&PlanPolicy::default());
        assert!(plain.iter().all(|p| p.subresource != "scale"));
        assert!(
            plain
                .iter()
                .any(|p| p.to_string() == "create pods/eviction (drains through the Eviction API)")
        );
        assert!(
            plain
                .iter()
                .any(|p| p.verb == "patch" && p.resource == "nodes")
        );
        let scaling = PlanPolicy::from_yaml("drain: {scaleUpToUnblock: true}").expect("policy");
        let with = required(&scaling);
        assert!(
            with.iter()
                .any(|p| p.to_string().starts_with("update deployments/scale.apps"))
        );
    }

    #[test]
    fn what_was_not_answered_counts_as_missing() {
        let req = required(&PlanPolicy::default());
        let mut answers = vec![true; req.len()];
        answers[2] = false;
        let m = missing(&req, &answers);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].verb, "patch");
        assert_eq!(missing(&req, &answers[..3]).len(), 1 + req.len() - 3);
    }
}
