//! The apiserver's defaults of a pod spec, applied at admission and when a controller's pod
//! is shown (its own module: `admission` and `kube` both need them, and `admission` renders
//! objects through `kube`).

use k8s_openapi::api::core::v1 as core;

/// Defaults of a pod spec (`bare`: a pod itself, which admission completes further).
pub fn default_spec(spec: &mut core::PodSpec, bare: bool) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(Default::default);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
    if bare {
        spec.service_account_name
            .get_or_insert_with(|| "default".into());
        spec.service_account = spec.service_account_name.clone();
        spec.enable_service_links.get_or_insert(true);
        spec.priority.get_or_insert(0);
        spec.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".into());
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some("NoExecute"))
            {
                tolerations.push(core::Toleration {
                    key: Some(key.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(300),
                    value: None,
                });
            }
        }
    }
}

fn default_container(c: &mut core::Container) {
    if c.image_pull_policy.is_none() {
        let image = c.image.clone().unwrap_or_default();
        let tag = image
            .rsplit('/')
            .next()
            .and_then(|last| last.split_once(':'))
            .map(|(_, t)| t);
        let always = !image.contains('@') && tag.is_none_or(|t| t == "latest");
        c.image_pull_policy = Some(if always { "Always" } else { "IfNotPresent" }.into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    c.resources.get_or_insert_with(Default::default);
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
}
