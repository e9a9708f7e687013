//! A pod spec given through the API, as the model sees it ([`PodTemplate`]): what it requests
//! (containers summed, init containers at their largest, as the scheduler counts them), where it
//! may run (node selector, tolerations, `nodeName`), what volumes it needs, and how its
//! containers behave.
//!
//! How a container behaves is not in a pod spec, so it is chosen here, and can be set per
//! template with annotations (`sim.upgraded.dev/...`, listed below): a container is Ready
//! [`STARTUP_MS`] after it starts (plus its readiness probe's initial delay), exits
//! [`EXIT_MS`] after SIGTERM (never later than the grace period), and, in a pod that does not
//! restart always (a Job's), runs [`RUN_MS`] and exits with code 0.

use k8s_openapi::api::core::v1 as core;
use upgraded_events::quantity;

use super::*;

/// From a container's start to Ready, without a readiness probe.
pub const STARTUP_MS: Millis = 2_000;
/// From SIGTERM to the container's exit (nginx and most servers stop at once).
pub const EXIT_MS: Millis = 1_000;
/// How long a run-to-completion container runs.
pub const RUN_MS: Millis = 5_000;

/// Annotations that set how the template's containers behave.
pub const ANNOTATION_STARTUP: &str = "sim.upgraded.dev/startup-seconds";
pub const ANNOTATION_EXIT: &str = "sim.upgraded.dev/exit-after-sigterm-seconds";
pub const ANNOTATION_RUN: &str = "sim.upgraded.dev/run-seconds";
pub const ANNOTATION_EXIT_CODE: &str = "sim.upgraded.dev/exit-code";

/// Why a pod spec cannot be simulated (a quantity that does not parse, an annotation that is
/// not a number); the API turns it into a 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub value: String,
    pub detail: String,
}

fn seconds(annotations: &Labels, key: &str) -> Result<Option<Millis>, SpecError> {
    annotations
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| (s * 1000.0) as Millis)
                .ok_or_else(|| SpecError {
                    field: format!("metadata.annotations[{key}]"),
                    value: v.clone(),
                    detail: "must be a number of seconds".into(),
                })
        })
        .transpose()
}

/// The requests of one container: `requests`, or `limits` where a request is not given (the
/// apiserver defaults requests to limits).
fn requests(c: &core::Container, at: &str) -> Result<(u64, u64), SpecError> {
    let r = c.resources.clone().unwrap_or_default();
    let get = |name: &str| {
        r.requests
            .as_ref()
            .and_then(|m| m.get(name))
            .or_else(|| r.limits.as_ref().and_then(|m| m.get(name)))
            .map(|q| q.0.clone())
    };
    let cpu = get("cpu")
        .map(|q| {
            quantity::cpu_millis(&q).map_err(|e| SpecError {
                field: format!("{at}.resources.requests[cpu]"),
                value: q.clone(),
                detail: e,
            })
        })
        .transpose()?
        .unwrap_or(0);
    let memory = get("memory")
        .map(|q| {
            quantity::bytes(&q).map_err(|e| SpecError {
                field: format!("{at}.resources.requests[memory]"),
                value: q.clone(),
                detail: e,
            })
        })
        .transpose()?
        .unwrap_or(0);
    Ok((cpu, memory))
}

/// The model's view of `spec`, with the template's `labels` and `annotations`.
pub fn from_spec(
    spec: &core::PodSpec,
    labels: &Labels,
    annotations: &Labels,
    at: &str,
) -> Result<PodTemplate, SpecError> {
    let (mut cpu, mut memory) = (0, 0);
    for (i, c) in spec.containers.iter().enumerate() {
        let (c_cpu, c_mem) = requests(c, &format!("{at}.containers[{i}]"))?;
        cpu += c_cpu;
        memory += c_mem;
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let (c_cpu, c_mem) = requests(c, &format!("{at}.initContainers[{i}]"))?;
        cpu = cpu.max(c_cpu);
        memory = memory.max(c_mem);
    }
    let restart = match spec.restart_policy.as_deref() {
        Some("OnFailure") => Restart::OnFailure,
        Some("Never") => Restart::Never,
        _ => Restart::Always,
    };
    let probe_delay = spec
        .containers
        .iter()
        .filter_map(|c| c.readiness_probe.as_ref())
        .filter_map(|p| p.initial_delay_seconds)
        .max()
        .unwrap_or(0)
        .max(0) as Millis
        * 1000;
    let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as Millis * 1000;
    let exit = seconds(annotations, ANNOTATION_EXIT)?.unwrap_or(EXIT_MS);
    let run = seconds(annotations, ANNOTATION_RUN)?;
    let exit_code = annotations
        .get(ANNOTATION_EXIT_CODE)
        .map(|v| {
            v.trim().parse::<i32>().map_err(|_| SpecError {
                field: format!("metadata.annotations[{ANNOTATION_EXIT_CODE}]"),
                value: v.clone(),
                detail: "must be an integer exit code".into(),
            })
        })
        .transpose()?
        .unwrap_or(0);
    let volumes = spec.volumes.iter().flatten();
    Ok(PodTemplate {
        labels: labels.clone(),
        cpu_millis: cpu,
        memory_bytes: memory,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| Toleration {
                key: t.key.clone().unwrap_or_default(),
                operator: t.operator.clone().unwrap_or_else(|| "Equal".into()),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone().unwrap_or_default(),
            })
            .collect(),
        empty_dir: volumes.clone().any(|v| v.empty_dir.is_some()),
        image: spec
            .containers
            .first()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        startup_ms: seconds(annotations, ANNOTATION_STARTUP)?.unwrap_or(STARTUP_MS + probe_delay),
        termination_ms: exit.min(grace),
        restart,
        run_ms: match restart {
            Restart::Always => run,
            _ => Some(run.unwrap_or(RUN_MS)),
        },
        exit_code,
        claims: volumes
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .collect(),
        probe: probes::probe_of(spec, at)?,
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        annotations: annotations.clone(),
        given: Some(Given::new(spec.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn container(
        cpu: Option<&str>,
        limit_cpu: Option<&str>,
        memory: Option<&str>,
    ) -> core::Container {
        let q = |v: Option<&str>| {
            v.map(|v| BTreeMap::from([(String::from("cpu"), Quantity(v.into()))]))
        };
        let mut requests = q(cpu);
        if let Some(m) = memory {
            requests
                .get_or_insert_with(BTreeMap::new)
                .insert("memory".into(), Quantity(m.into()));
        }
        core::Container {
            name: "c".into(),
            image: Some("nginx:1.27".into()),
            resources: Some(core::ResourceRequirements {
                requests,
                limits: q(limit_cpu),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let spec = core::PodSpec {
            containers: vec![
                container(Some("250m"), None, Some("64Mi")),
                container(None, Some("1"), None),
            ],
            init_containers: Some(vec![container(Some("2"), None, None)]),
            ..Default::default()
        };
        let t = from_spec(&spec, &Labels::new(), &Labels::new(), "spec").expect("valid");
        // 250m + 1000m (limit as request) = 1250m < the init container's 2000m.
        assert_eq!(t.cpu_millis, 2000);
        assert_eq!(t.memory_bytes, 64 << 20);
        assert_eq!(t.image, "nginx:1.27");
        assert_eq!((t.restart, t.run_ms), (Restart::Always, None));
        assert_eq!(t.startup_ms, STARTUP_MS);
        assert_eq!(t.termination_ms, EXIT_MS);
    }

    #[test]
    fn a_job_pod_runs_to_completion_and_annotations_set_its_behaviour() {
        let spec = core::PodSpec {
            containers: vec![container(None, None, None)],
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        };
        let t = from_spec(&spec, &Labels::new(), &Labels::new(), "spec").expect("valid");
        assert_eq!(
            (t.restart, t.run_ms, t.exit_code),
            (Restart::Never, Some(RUN_MS), 0)
        );
        assert_eq!(t.termination_ms, 0, "never later than the grace period");
        let a = Labels::from([
            (ANNOTATION_RUN.to_string(), "90".to_string()),
            (ANNOTATION_EXIT_CODE.to_string(), "3".to_string()),
            (ANNOTATION_STARTUP.to_string(), "0.5".to_string()),
        ]);
        let t = from_spec(&spec, &Labels::new(), &a, "spec").expect("valid");
        assert_eq!(
            (t.run_ms, t.exit_code, t.startup_ms),
            (Some(90_000), 3, 500)
        );
        let bad = Labels::from([(ANNOTATION_RUN.to_string(), "soon".to_string())]);
        let e = from_spec(&spec, &Labels::new(), &bad, "spec").expect_err("not a number");
        assert_eq!(e.field, format!("metadata.annotations[{ANNOTATION_RUN}]"));
        let mut broken = spec.clone();
        broken.containers = vec![container(Some("lots"), None, None)];
        let e = from_spec(
            &broken,
            &Labels::new(),
            &Labels::new(),
            "spec.template.spec",
        )
        .expect_err("not a quantity");
        assert_eq!(
            e.field,
            "spec.template.spec.containers[0].resources.requests[cpu]"
        );
    }
}
