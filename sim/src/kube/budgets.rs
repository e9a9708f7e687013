//! PodDisruptionBudgets as the API shows them: the spec as given, and the disruption
//! controller's status with its `disruptedPods` and `DisruptionAllowed` condition.

use super::*;

pub fn pdb(b: &crate::model::Pdb, w: &World) -> policy::PodDisruptionBudget {
    let s = w.pdb_status(b);
    let allowed = s.disruptions_allowed > 0;
    policy::PodDisruptionBudget {
        metadata: meta::ObjectMeta {
            name: Some(b.name.clone()),
            namespace: Some(b.namespace.clone()),
            uid: Some(b.uid.clone()),
            resource_version: Some(b.resource_version.to_string()),
            creation_timestamp: Some(time(b.created)),
            generation: Some(b.generation as i64),
            labels: opt_map(&b.labels),
            annotations: opt_map(&b.annotations),
            ..Default::default()
        },
        spec: Some(policy::PodDisruptionBudgetSpec {
            selector: Some(label_selector(&b.selector)),
            min_available: b.min_available.as_ref().map(int_or_string),
            max_unavailable: b.max_unavailable.as_ref().map(int_or_string),
            unhealthy_pod_eviction_policy: b.unhealthy_pod_eviction_policy.clone(),
        }),
        status: Some(policy::PodDisruptionBudgetStatus {
            current_healthy: s.current_healthy as i32,
            desired_healthy: s.desired_healthy as i32,
            disruptions_allowed: s.disruptions_allowed as i32,
            expected_pods: s.expected_pods as i32,
            observed_generation: Some(b.generation as i64),
            disrupted_pods: (!b.disrupted.is_empty()).then(|| {
                b.disrupted
                    .iter()
                    .map(|(name, at)| (name.clone(), time(*at)))
                    .collect()
            }),
            conditions: Some(vec![meta::Condition {
                type_: "DisruptionAllowed".into(),
                status: if allowed { "True" } else { "False" }.into(),
                reason: if allowed {
                    "SufficientPods"
                } else {
                    "InsufficientPods"
                }
                .into(),
                message: String::new(),
                last_transition_time: time(b.created),
                observed_generation: Some(b.generation as i64),
            }]),
        }),
    }
}
