//! A check's probe pods on the sim, created through the API as the daemon creates them
//! (pinned with `nodeName`, tolerating every taint, `restartPolicy: Never`): they end with
//! the exit code and termination message the model of each machine's pod network, CoreDNS
//! and volumes gives, and `upgraded_events::check::classify` reads them as it would read a
//! real probe's. Faults break each of them from a kubelet version on.

mod common;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use upgraded_events::Version;
use upgraded_events::check::{ProbeEnd, Verdict, classify};
use upgraded_sim::server::Sim;
use upgraded_sim::{Clock, scenario};

const WORKER: &str = "upgrade-lab-worker";
const WORKER2: &str = "upgrade-lab-worker2";

async fn start() -> (Arc<Sim>, Client) {
    let world =
        scenario::build("kind", Clock::virtual_at(1_800_000_000_000), 3).expect("kind builds");
    common::serve_world(world).await
}

fn probe(
    name: &str,
    node: &str,
    kind: &str,
    targets: &str,
    nonce: &str,
    claim: Option<&str>,
) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"upgraded.dev/check": kind}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "probe",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                "env": [
                    {"name": "UPGRADED_PROBE", "value": kind},
                    {"name": "UPGRADED_TARGETS", "value": targets},
                    {"name": "UPGRADED_NONCE", "value": nonce}
                ]
            }]
        }
    });
    if let Some(c) = claim {
        // A claim under `WaitForFirstConsumer` is provisioned where the scheduler puts its
        // first pod; a `nodeName` pod skips the scheduler and would wait forever, as on a real
        // cluster. Storage probes are placed by a hostname selector; tolerating every taint
        // still lets them onto the cordoned node.
        pod["spec"].as_object_mut().map(|s| s.remove("nodeName"));
        pod["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        pod["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": c}}]);
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
    }
    serde_json::from_value(pod).expect("a Pod")
}

/// Creates the probe, lets the model run it to its end, and classifies what the API shows.
async fn run(sim: &Sim, pods: &Api<Pod>, pod: Pod) -> Verdict {
    let name = pod.metadata.name.clone().expect("named");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the probe is created");
    sim.world().advance(60_000);
    let pod = pods.get(&name).await.expect("the probe is there");
    let status = pod.status.expect("a status");
    let terminated = status
        .container_statuses
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated);
    classify(&ProbeEnd {
        exit_code: terminated.as_ref().map(|t| t.exit_code),
        message: terminated.and_then(|t| t.message),
        disruption: None,
    })
}

fn address(sim: &Sim, node: &str) -> String {
    sim.world().nodes[node].address.clone()
}

#[tokio::test]
async fn pod_network_probes_pass_until_a_machines_network_breaks_with_its_new_kubelet() {
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let coredns = {
        let w = sim.world();
        let p = w
            .pods
            .values()
            .find(|p| p.name.starts_with("coredns-"))
            .expect("CoreDNS runs");
        format!("{}:8080", p.ip)
    };
    let targets = format!("{}:10250,{coredns}", address(&sim, WORKER2));
    let v = run(
        &sim,
        &pods,
        probe("net-1", WORKER, "pod-network", &targets, "", None),
    )
    .await;
    match v {
        Verdict::Passed { facts } => {
            assert_eq!(facts["dialled"], "2");
            assert_eq!(facts["failed"], "0");
        }
        other => panic!("{other:?}"),
    }
    // The fault waits for the new kubelet: still at v1.34.0, the network works.
    sim.world()
        .faults
        .net_broken_from
        .insert(WORKER2.into(), Version::new(1, 35, 0));
    let v = run(
        &sim,
        &pods,
        probe("net-2", WORKER, "pod-network", &targets, "", None),
    )
    .await;
    assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
    sim.world()
        .restart_kubelet(WORKER2, Version::new(1, 35, 3))
        .expect("restart");
    sim.world().advance(60_000);
    let v = run(
        &sim,
        &pods,
        probe("net-3", WORKER, "pod-network", &targets, "", None),
    )
    .await;
    match v {
        Verdict::Failed { detail, facts } => {
            assert!(
                detail.contains(&format!("(node {WORKER2}) from {WORKER}: i/o timeout")),
                "{detail}"
            );
            assert_eq!(
                facts["failed"], "1",
                "CoreDNS on the control plane still answers"
            );
        }
        other => panic!("{other:?}"),
    }
    // From the broken machine itself, nothing answers.
    let v = run(
        &sim,
        &pods,
        probe("net-4", WORKER2, "pod-network", &coredns, "", None),
    )
    .await;
    assert!(matches!(v, Verdict::Failed { .. }), "{v:?}");
    // The pod failed as a real one would: phase Failed, its container exited 1.
    let w = sim.world();
    let p = &w.pods[&("default".to_string(), "net-4".to_string())];
    assert_eq!(p.phase, upgraded_sim::model::PodPhase::Failed);
    assert_eq!(p.exited.map(|(code, _)| code), Some(1));
}

#[tokio::test]
async fn dns_probes_fail_once_the_control_plane_runs_the_broken_coredns() {
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let names = "kubernetes.default.svc,upg-probe.upgraded-checks.svc";
    sim.world().faults.dns_broken_from = Some(Version::new(1, 35, 0));
    let v = run(&sim, &pods, probe("dns-1", WORKER, "dns", names, "", None)).await;
    assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
    sim.world().faults.dns_broken_from = Some(Version::new(1, 34, 0));
    match run(&sim, &pods, probe("dns-2", WORKER, "dns", names, "", None)).await {
        Verdict::Failed { detail, .. } => assert!(
            detail.contains("lookup kubernetes.default.svc on 10.96.0.10:53"),
            "{detail}"
        ),
        other => panic!("{other:?}"),
    }
}

/// A DNS probe finds a Service by name and reaches a pod through its ClusterIP; a name
/// nobody made is not found, and a Service with no ready pod behind it refuses.
#[tokio::test]
async fn dns_probes_resolve_services_and_dial_their_cluster_ip() {
    use k8s_openapi::api::core::v1::Service;
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client, "default");
    let echo: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo", "labels": {"app": "echo"}},
        "spec": {"nodeName": WORKER2, "containers": [{"name": "echo", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "args": ["netexec"]}]}
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &echo)
        .await
        .expect("echo");
    let svc = |name: &str, app: &str| -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"port": 8080, "targetPort": 8080}]}
        }))
        .expect("a Service")
    };
    let made = services
        .create(&PostParams::default(), &svc("echo", "echo"))
        .await
        .expect("service");
    let ip = made.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let empty = services
        .create(&PostParams::default(), &svc("nobody", "nobody"))
        .await
        .expect("service");
    let empty_ip = empty.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    sim.world().advance(10_000);
    let targets = format!("echo.default.svc.cluster.local,{ip}:8080");
    let v = run(
        &sim,
        &pods,
        probe("dns-s1", WORKER, "dns", &targets, "", None),
    )
    .await;
    assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
    let missing = "gone.default.svc.cluster.local";
    match run(
        &sim,
        &pods,
        probe("dns-s2", WORKER, "dns", missing, "", None),
    )
    .await
    {
        Verdict::Failed { detail, .. } => assert!(detail.contains("no such host"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let refused = format!("{empty_ip}:8080");
    match run(
        &sim,
        &pods,
        probe("dns-s3", WORKER, "dns", &refused, "", None),
    )
    .await
    {
        Verdict::Failed { detail, .. } => {
            assert!(detail.contains("no ready endpoint"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_volume_keeps_the_writers_nonce_for_the_reader_until_mounts_break() {
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "probe-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    }))
    .expect("a claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("the claim is created");
    let write = probe("w", WORKER, "storage-write", "", "n-42", Some("probe-data"));
    // The probe's node is cordoned, as it is during its checks.
    sim.world().set_unschedulable(WORKER, true).expect("cordon");
    let v = run(&sim, &pods, write).await;
    assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
    let read = probe("r", WORKER, "storage-read", "", "n-42", Some("probe-data"));
    let v = run(&sim, &pods, read).await;
    assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
    let wrong = probe("r2", WORKER, "storage-read", "", "n-43", Some("probe-data"));
    match run(&sim, &pods, wrong).await {
        Verdict::Failed { detail, .. } => {
            assert!(detail.contains("read \"n-42\" back"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    sim.world()
        .faults
        .storage_broken_from
        .insert(WORKER.into(), Version::new(1, 34, 0));
    let read = probe("r3", WORKER, "storage-read", "", "n-42", Some("probe-data"));
    match run(&sim, &pods, read).await {
        Verdict::Failed { detail, .. } => {
            assert!(detail.contains("MountVolume.SetUp failed"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_probe_is_refused_not_run_as_a_pass() {
    let (_sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let err = pods
        .create(
            &PostParams::default(),
            &probe("x", WORKER, "ping-everything", "", "", None),
        )
        .await
        .expect_err("refused");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains("UPGRADED_PROBE"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
}
