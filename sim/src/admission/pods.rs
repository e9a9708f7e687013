//! Pod specs, in a pod or in a workload's template: the apiserver's defaults and its validation.
//!
//! Defaults: `restartPolicy: Always`, `dnsPolicy: ClusterFirst`, `schedulerName`,
//! `terminationGracePeriodSeconds: 30`, an empty `securityContext`; per container
//! `imagePullPolicy` (`Always` for `:latest` or no tag, else `IfNotPresent`), the termination
//! message path and policy, port protocol `TCP`. A bare pod (not a template) also gets the
//! admission plugins' additions: `serviceAccountName: default`, `enableServiceLinks`, priority
//! 0, and tolerating `not-ready`/`unreachable` for 300 s.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;

use super::{FieldError, quoted};

pub use crate::defaults::default_spec;

/// Problems of a pod spec at `path` (`spec`, `spec.template.spec`); `restart` are the restart
/// policies allowed there.
pub fn validate_spec(
    spec: &core::PodSpec,
    path: &str,
    restart: &[&'static str],
) -> Vec<FieldError> {
    let mut out = Vec::new();
    if spec.containers.is_empty() {
        out.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    let lists = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            if c.name.is_empty() {
                out.push(FieldError::required(format!("{at}.name"), ""));
            } else {
                out.extend(super::label_problems(&format!("{at}.name"), &c.name));
                if !names.insert(c.name.clone()) {
                    out.push(FieldError::duplicate(format!("{at}.name"), &c.name));
                }
            }
            if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                out.push(FieldError::required(format!("{at}.image"), ""));
            }
            for (j, p) in c.ports.iter().flatten().enumerate() {
                if !(1..=65535).contains(&p.container_port) {
                    out.push(FieldError::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        p.container_port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if let Some(proto) = p.protocol.as_deref()
                    && !["TCP", "UDP", "SCTP"].contains(&proto)
                {
                    out.push(FieldError::not_supported(
                        format!("{at}.ports[{j}].protocol"),
                        proto,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
            if let Some(policy) = c.image_pull_policy.as_deref()
                && !["Always", "IfNotPresent", "Never"].contains(&policy)
            {
                out.push(FieldError::not_supported(
                    format!("{at}.imagePullPolicy"),
                    policy,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
    }
    match spec.restart_policy.as_deref() {
        None if !restart.contains(&"Always") => {
            let valid: Vec<String> = restart.iter().map(|r| quoted(r)).collect();
            out.push(FieldError::required(
                format!("{path}.restartPolicy"),
                format!("valid values: {}", valid.join(", ")),
            ));
        }
        Some(r) if !restart.contains(&r) => {
            out.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                r,
                restart,
            ));
        }
        _ => {}
    }
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        if !volumes.insert(v.name.clone()) {
            out.push(FieldError::duplicate(format!("{at}.name"), &v.name));
        }
        if let Some(c) = &v.persistent_volume_claim
            && c.claim_name.is_empty()
        {
            out.push(FieldError::required(
                format!("{at}.persistentVolumeClaim.claimName"),
                "",
            ));
        }
    }
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
                if !volumes.contains(&m.name) {
                    out.push(FieldError::not_supported_mount(
                        format!("{path}.{list}[{i}].volumeMounts[{j}].name"),
                        &m.name,
                    ));
                }
            }
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        out.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    out
}

impl FieldError {
    /// A volume mount that names no volume of the pod.
    fn not_supported_mount(field: String, name: &str) -> FieldError {
        FieldError {
            field,
            problem: super::Problem::NotSupported(quoted(name), vec![]),
            detail: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: Option<&str>) -> core::Container {
        core::Container {
            name: name.into(),
            image: image.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_apiservers() {
        let mut spec = core::PodSpec {
            containers: vec![
                container("web", Some("nginx")),
                container("side", Some("busybox:1.36")),
            ],
            ..Default::default()
        };
        default_spec(&mut spec, true);
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(2));
        let mut template = spec.clone();
        template.tolerations = None;
        default_spec(&mut template, false);
        assert!(
            template.tolerations.is_none(),
            "templates get no admission tolerations"
        );
    }

    #[test]
    fn problems_are_named_by_field() {
        let spec = core::PodSpec {
            containers: vec![container("web", None), container("web", Some("x"))],
            restart_policy: Some("Sometimes".into()),
            ..Default::default()
        };
        let words: Vec<String> = validate_spec(&spec, "spec.template.spec", &["Always"])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            words.contains(&"spec.template.spec.containers[0].image: Required value".to_string()),
            "{words:?}"
        );
        assert!(
            words.contains(
                &"spec.template.spec.containers[1].name: Duplicate value: \"web\"".to_string()
            ),
            "{words:?}"
        );
        assert!(words.contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\"".to_string()), "{words:?}");
        let job = core::PodSpec {
            containers: vec![container("run", Some("busybox"))],
            ..Default::default()
        };
        let words: Vec<String> = validate_spec(&job, "spec.template.spec", &["OnFailure", "Never"])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            words,
            [
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
            ]
        );
        let empty = core::PodSpec::default();
        assert_eq!(
            validate_spec(&empty, "spec", &["Always"])[0].to_string(),
            "spec.containers: Required value"
        );
    }
}
