//! APIs a release stops serving, as data, and what the cluster was seen using of them.
//!
//! The table is the Kubernetes deprecation guide's: each (group, version, resource) with the
//! minor release that removes it and what replaces it. The observations come from three
//! sources, gathered by whoever can reach them (the daemon, or an operator's captured files
//! for `upgradectl plan`) and parsed in the planner: each apiserver instance's
//! `apiserver_requested_deprecated_apis` series, the objects of deployed Helm releases, and
//! the `kubectl.kubernetes.io/last-applied-configuration` of listed objects.

use serde::{Deserialize, Serialize};

/// One API version of one resource that a release removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovedApi {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// The resource, plural, as in a URL and the apiserver's metrics.
    pub resource: &'static str,
    /// The kind, as in a manifest.
    pub kind: &'static str,
    /// The minor release (1.x) that no longer serves it.
    pub removed_in: u32,
    /// What to use instead.
    pub replacement: &'static str,
}

impl RemovedApi {
    /// `group/version` as a manifest's `apiVersion` spells it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn row(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    removed_in: u32,
    replacement: &'static str,
) -> RemovedApi {
    RemovedApi {
        group,
        version,
        resource,
        kind,
        removed_in,
        replacement,
    }
}

/// The removals of 1.22 to 1.32, from the Kubernetes deprecated API migration guide. 1.30,
/// 1.31, 1.33, 1.34 and 1.35 remove no API; a later release's rows go here.
#[rustfmt::skip]
pub const REMOVED_APIS: &[RemovedApi] = &[
    // 1.22
    row("admissionregistration.k8s.io", "v1beta1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", 22, "admissionregistration.k8s.io/v1"),
    row("admissionregistration.k8s.io", "v1beta1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", 22, "admissionregistration.k8s.io/v1"),
    row("apiextensions.k8s.io", "v1beta1", "customresourcedefinitions", "CustomResourceDefinition", 22, "apiextensions.k8s.io/v1"),
    row("apiregistration.k8s.io", "v1beta1", "apiservices", "APIService", 22, "apiregistration.k8s.io/v1"),
    row("authentication.k8s.io", "v1beta1", "tokenreviews", "TokenReview", 22, "authentication.k8s.io/v1"),
    row("authorization.k8s.io", "v1beta1", "subjectaccessreviews", "SubjectAccessReview", 22, "authorization.k8s.io/v1"),
    row("authorization.k8s.io", "v1beta1", "localsubjectaccessreviews", "LocalSubjectAccessReview", 22, "authorization.k8s.io/v1"),
    row("authorization.k8s.io", "v1beta1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", 22, "authorization.k8s.io/v1"),
    row("certificates.k8s.io", "v1beta1", "certificatesigningrequests", "CertificateSigningRequest", 22, "certificates.k8s.io/v1"),
    row("coordination.k8s.io", "v1beta1", "leases", "Lease", 22, "coordination.k8s.io/v1"),
    row("extensions", "v1beta1", "ingresses", "Ingress", 22, "networking.k8s.io/v1"),
    row("networking.k8s.io", "v1beta1", "ingresses", "Ingress", 22, "networking.k8s.io/v1"),
    row("networking.k8s.io", "v1beta1", "ingressclasses", "IngressClass", 22, "networking.k8s.io/v1"),
    row("rbac.authorization.k8s.io", "v1beta1", "clusterroles", "ClusterRole", 22, "rbac.authorization.k8s.io/v1"),
    row("rbac.authorization.k8s.io", "v1beta1", "clusterrolebindings", "ClusterRoleBinding", 22, "rbac.authorization.k8s.io/v1"),
    row("rbac.authorization.k8s.io", "v1beta1", "roles", "Role", 22, "rbac.authorization.k8s.io/v1"),
    row("rbac.authorization.k8s.io", "v1beta1", "rolebindings", "RoleBinding", 22, "rbac.authorization.k8s.io/v1"),
    row("scheduling.k8s.io", "v1beta1", "priorityclasses", "PriorityClass", 22, "scheduling.k8s.io/v1"),
    row("storage.k8s.io", "v1beta1", "csidrivers", "CSIDriver", 22, "storage.k8s.io/v1"),
    row("storage.k8s.io", "v1beta1", "csinodes", "CSINode", 22, "storage.k8s.io/v1"),
    row("storage.k8s.io", "v1beta1", "storageclasses", "StorageClass", 22, "storage.k8s.io/v1"),
    row("storage.k8s.io", "v1beta1", "volumeattachments", "VolumeAttachment", 22, "storage.k8s.io/v1"),
    // 1.25
    row("batch", "v1beta1", "cronjobs", "CronJob", 25, "batch/v1"),
    row("discovery.k8s.io", "v1beta1", "endpointslices", "EndpointSlice", 25, "discovery.k8s.io/v1"),
    row("events.k8s.io", "v1beta1", "events", "Event", 25, "events.k8s.io/v1"),
    row("autoscaling", "v2beta1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", 25, "autoscaling/v2"),
    row("policy", "v1beta1", "poddisruptionbudgets", "PodDisruptionBudget", 25, "policy/v1"),
    row("policy", "v1beta1", "podsecuritypolicies", "PodSecurityPolicy", 25, "Pod Security Admission (no replacement API)"),
    row("node.k8s.io", "v1beta1", "runtimeclasses", "RuntimeClass", 25, "node.k8s.io/v1"),
    // 1.26
    row("flowcontrol.apiserver.k8s.io", "v1beta1", "flowschemas", "FlowSchema", 26, "flowcontrol.apiserver.k8s.io/v1"),
    row("flowcontrol.apiserver.k8s.io", "v1beta1", "prioritylevelconfigurations", "PriorityLevelConfiguration", 26, "flowcontrol.apiserver.k8s.io/v1"),
    row("autoscaling", "v2beta2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", 26, "autoscaling/v2"),
    // 1.27
    row("storage.k8s.io", "v1beta1", "csistoragecapacities", "CSIStorageCapacity", 27, "storage.k8s.io/v1"),
    // 1.29
    row("flowcontrol.apiserver.k8s.io", "v1beta2", "flowschemas", "FlowSchema", 29, "flowcontrol.apiserver.k8s.io/v1"),
    row("flowcontrol.apiserver.k8s.io", "v1beta2", "prioritylevelconfigurations", "PriorityLevelConfiguration", 29, "flowcontrol.apiserver.k8s.io/v1"),
    // 1.32
    row("flowcontrol.apiserver.k8s.io", "v1beta3", "flowschemas", "FlowSchema", 32, "flowcontrol.apiserver.k8s.io/v1"),
    row("flowcontrol.apiserver.k8s.io", "v1beta3", "prioritylevelconfigurations", "PriorityLevelConfiguration", 32, "flowcontrol.apiserver.k8s.io/v1"),
];

/// The table's row for a resource at an API version.
pub fn removed_resource(group: &str, version: &str, resource: &str) -> Option<&'static RemovedApi> {
    REMOVED_APIS
        .iter()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// The table's row for a manifest's `apiVersion` and `kind`.
pub fn removed_kind(api_version: &str, kind: &str) -> Option<&'static RemovedApi> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    REMOVED_APIS
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// What the cluster was seen using of APIs that releases remove (empty: nothing was looked
/// at, or nothing found).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiUsage {
    /// One entry per apiserver instance asked (each keeps its own counters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apiservers: Vec<ApiserverApis>,
    /// Objects of deployed Helm releases, at an API version some release removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helm: Vec<ManifestObject>,
    /// Listed objects last applied (`kubectl apply`) at such an API version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<ManifestObject>,
    /// Sources that could not be read, each with why (`apiserver cp-2: ...`): what the
    /// gate could not see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

impl ApiUsage {
    pub fn is_empty(&self) -> bool {
        self.apiservers.is_empty()
            && self.helm.is_empty()
            && self.applied.is_empty()
            && self.unread.is_empty()
    }
}

/// One apiserver instance's deprecated-API counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiserverApis {
    /// Which instance (a node name or an address).
    pub instance: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deprecated: Vec<DeprecatedSeries>,
    /// How long the instance had been up when its metrics were read (its counters cover
    /// that much traffic); unknown when `process_start_time_seconds` was missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_secs: Option<u64>,
}

/// One `apiserver_requested_deprecated_apis` series, with the requests
/// `apiserver_request_total` counted for the same resource and version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeprecatedSeries {
    pub group: String,
    pub version: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// The series' `removed_release` label (`1.32`), empty when the API has no planned
    /// removal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub removed_release: String,
    pub requests: u64,
}

impl DeprecatedSeries {
    /// The minor release that removes it: the series' label, else the table's.
    pub fn removed_in(&self) -> Option<u32> {
        let label = self
            .removed_release
            .strip_prefix("1.")
            .and_then(|m| m.parse().ok());
        label.or_else(|| {
            removed_resource(&self.group, &self.version, &self.resource).map(|r| r.removed_in)
        })
    }

    /// `group/version resource` for messages.
    pub fn name(&self) -> String {
        let gv = if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        if self.subresource.is_empty() {
            format!("{gv} {}", self.resource)
        } else {
            format!("{gv} {}/{}", self.resource, self.subresource)
        }
    }
}

/// An object a manifest or an annotation declares at some API version.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ManifestObject {
    /// Where it was seen: `helm release NAMESPACE/NAME`, or the listed object
    /// (`deployment/NAMESPACE/NAME`).
    pub source: String,
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row by target minor: removed at its release, served before it.
    #[test]
    fn every_row_is_found_by_resource_and_kind_and_names_a_replacement() {
        for r in REMOVED_APIS {
            assert_eq!(
                removed_resource(r.group, r.version, r.resource),
                Some(r),
                "{r:?}"
            );
            let by_kind = removed_kind(&r.api_version(), r.kind).expect("by kind");
            assert_eq!(by_kind.removed_in, r.removed_in, "{r:?}");
            assert!(!r.replacement.is_empty());
            assert!((22..=32).contains(&r.removed_in), "{r:?}");
        }
    }

    #[test]
    fn the_guide_removals_by_release() {
        let minors = |m: u32| -> Vec<String> {
            REMOVED_APIS
                .iter()
                .filter(|r| r.removed_in == m)
                .map(|r| format!("{} {}", r.api_version(), r.resource))
                .collect()
        };
        assert_eq!(
            minors(29),
            [
                "flowcontrol.apiserver.k8s.io/v1beta2 flowschemas",
                "flowcontrol.apiserver.k8s.io/v1beta2 prioritylevelconfigurations"
            ]
        );
        assert_eq!(
            minors(32),
            [
                "flowcontrol.apiserver.k8s.io/v1beta3 flowschemas",
                "flowcontrol.apiserver.k8s.io/v1beta3 prioritylevelconfigurations"
            ]
        );
        for m in [28, 30, 31, 33, 34, 35] {
            assert!(minors(m).is_empty(), "1.{m} removes nothing");
        }
        assert!(minors(25).contains(&"policy/v1beta1 poddisruptionbudgets".to_string()));
        assert!(minors(22).contains(&"extensions/v1beta1 ingresses".to_string()));
    }

    #[test]
    fn a_series_removal_comes_from_its_label_or_the_table() {
        let mut s = DeprecatedSeries {
            group: "flowcontrol.apiserver.k8s.io".into(),
            version: "v1beta3".into(),
            resource: "flowschemas".into(),
            removed_release: "1.32".into(),
            ..DeprecatedSeries::default()
        };
        assert_eq!(s.removed_in(), Some(32));
        s.removed_release.clear();
        assert_eq!(s.removed_in(), Some(32));
        s.version = "v1".into();
        assert_eq!(s.removed_in(), None);
        assert_eq!(removed_kind("v1", "Pod"), None);
        assert_eq!(
            removed_kind("batch/v1beta1", "CronJob").map(|r| r.removed_in),
            Some(25)
        );
    }
}
