//! What a node's checks create and how their results become the step's verdict: which peers
//! a pod-network probe dials (one per other generation, one node not yet upgraded, one
//! control-plane node: O(generations), never O(n²)), the probe pods' manifests (pinned with
//! `nodeName`, tolerating every taint, in the namespace the daemon owns, labelled and named
//! deterministically so a restarted daemon adopts them), and the step's verdict from the
//! checks' results.

use serde_json::{Value, json};

use super::OnGateFailure;
use super::{Boundary, Check, CheckKind, ChecksPolicy, ClusterHas, Scope, Severity, Verdict};
use crate::inventory::Inventory;

/// The namespace every probe object lives in; the daemon creates it and owns it.
pub const NAMESPACE: &str = "upgraded-checks";
/// The port echo pods serve on (agnhost `netexec`).
pub const ECHO_PORT: u16 = 8080;
/// Labels on every probe object: the run, the check, the node, the attempt.
pub const LABEL_RUN: &str = "upgraded.dev/run";
pub const LABEL_CHECK: &str = "upgraded.dev/check";
pub const LABEL_NODE: &str = "upgraded.dev/node";
pub const LABEL_ATTEMPT: &str = "upgraded.dev/attempt";
/// The node whose check made a probe pod (an echo pod runs on a peer for it): what the
/// check deletes when it ends, every attempt's (one cut short by an error leaves its own).
pub const LABEL_SUBJECT: &str = "upgraded.dev/subject";

/// The script a probe container runs on a real cluster (`sh`, `nc`, `nslookup`, `curl`, as
/// in agnhost's image): it reads the same variables the sim's model answers, tries every
/// target (and asks each that answered to dial `UPGRADED_BACK_TO` back through netexec's
/// `/dial`), writes one JSON line to its termination message (`UPGRADED_TERMINATION_LOG`
/// where a test puts it) and exits 0 (all answered) or 1.
pub const PROBE_SCRIPT: &str = r#"set -u
log="${UPGRADED_TERMINATION_LOG:-/dev/termination-log}"
failed=""; n=0
for t in $(echo "${UPGRADED_TARGETS:-}" | tr ',' ' '); do
  n=$((n+1))
  case "$UPGRADED_PROBE" in
    pod-network|host-network)
      if ! nc -z -w 5 "${t%:*}" "${t##*:}" >/dev/null 2>&1; then failed="$failed dial $t: no answer;"
      elif [ -n "${UPGRADED_BACK_TO:-}" ]; then
        b="$UPGRADED_BACK_TO"
        curl -s -m 10 "http://$t/dial?request=hostname&protocol=http&host=${b%:*}&port=${b##*:}&tries=1" | grep -q '"responses":\["' \
          || failed="$failed dial back from $t to $b: no answer;"
      fi ;;
    dns) case "$t" in
        *:*) nc -z -w 5 "${t%:*}" "${t##*:}" >/dev/null 2>&1 || failed="$failed dial service $t: no answer;" ;;
        *) nslookup "$t" >/dev/null 2>&1 || failed="$failed lookup $t: no answer;" ;;
      esac ;;
    storage-*) ;;
    *) echo "{\"ok\":false,\"detail\":\"unknown probe\"}" > "$log"; exit 2 ;;
  esac
done
case "$UPGRADED_PROBE" in
  storage-write) n=1; echo "$UPGRADED_NONCE" > /data/nonce && sync || failed="write /data/nonce failed;" ;;
  storage-read) n=1; [ "$(cat /data/nonce 2>/dev/null)" = "$UPGRADED_NONCE" ] || failed="read $(cat /data/nonce 2>/dev/null) back, expected $UPGRADED_NONCE;" ;;
esac
if [ -z "$failed" ]; then
  echo "{\"ok\":true,\"detail\":\"$n target(s) answered\",\"facts\":{\"failed\":\"0\"}}" > "$log"; exit 0
fi
echo "{\"ok\":false,\"detail\":\"${failed# }\"}" > "$log"; exit 1
"#;

impl ClusterHas {
    /// A cluster with every subject, the StorageClasses the policy names among them: what
    /// a policy is validated and planned against.
    pub fn everything(policy: &ChecksPolicy) -> ClusterHas {
        ClusterHas {
            stacked_etcd: true,
            coredns: true,
            kube_proxy: true,
            storage_classes: policy.storage_classes.iter().cloned().collect(),
            extended_resources: true,
        }
    }

    /// What the pre-upgrade inventory shows the cluster has.
    pub fn of(inventory: &Inventory) -> ClusterHas {
        let app = |value: &str| {
            inventory.pods.iter().any(|p| {
                p.namespace == "kube-system"
                    && p.labels.get("k8s-app").map(String::as_str) == Some(value)
            })
        };
        ClusterHas {
            stacked_etcd: inventory
                .nodes
                .iter()
                .any(|n| n.control_plane.as_ref().is_some_and(|cp| cp.etcd.is_some())),
            coredns: app("kube-dns"),
            kube_proxy: app("kube-proxy"),
            storage_classes: inventory.storage_classes.iter().cloned().collect(),
            extended_resources: inventory.nodes.iter().any(|n| !n.extended.is_empty()),
        }
    }
}

/// A node as the peer choice sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub generation: String,
    pub control_plane: bool,
    /// Its upgrade in this run has not started.
    pub not_yet_upgraded: bool,
    /// The run is working on it now (cordoned, draining, restarting), or has parked it (it
    /// may be down): never dialled, as its answer would say nothing about the node under
    /// check.
    pub busy: bool,
}

/// The nodes `subject`'s pod-network probe dials, each once, in a stable order: the first
/// node (by name) of every other generation, the first node not yet upgraded, the first
/// control-plane node.
pub fn network_peers(subject: &str, peers: &[Peer]) -> Vec<String> {
    let mut sorted: Vec<&Peer> = peers
        .iter()
        .filter(|p| p.name != subject && !p.busy)
        .collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let own = peers
        .iter()
        .find(|p| p.name == subject)
        .map(|p| p.generation.as_str());
    let mut out: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    };
    let mut generations: Vec<&str> = Vec::new();
    for p in sorted.iter().filter(|p| !p.control_plane) {
        if Some(p.generation.as_str()) != own && !generations.contains(&p.generation.as_str()) {
            generations.push(&p.generation);
            push(&p.name);
        }
    }
    if let Some(p) = sorted
        .iter()
        .find(|p| p.not_yet_upgraded && !p.control_plane)
    {
        push(&p.name);
    }
    if let Some(p) = sorted.iter().find(|p| p.control_plane) {
        push(&p.name);
    }
    out
}

/// The node checks at `boundary` that a node's step runs: probe pods on the node, and the
/// node's devices read from its status.
pub fn node_probe_checks(checks: &[Check], boundary: Boundary) -> Vec<Check> {
    checks
        .iter()
        .filter(|c| c.scope == Scope::Node && c.runs_at(boundary) && boundary != Boundary::Final)
        .filter(|c| match c.kind {
            CheckKind::PodNetwork | CheckKind::Dns | CheckKind::Devices => {
                boundary != Boundary::BeforeKubeletRestart
            }
            CheckKind::Storage { .. } => true,
            // The operator's node checks, on the node before its uncordon.
            CheckKind::UserJob { .. }
            | CheckKind::UserHttp { .. }
            | CheckKind::UserCommand { .. } => boundary != Boundary::BeforeKubeletRestart,
            _ => false,
        })
        .cloned()
        .collect()
}

/// What a storage check's probes do at `boundary`: at the baseline, write then read back
/// on a claim of its own; before the kubelet restart, write; after it, read what was
/// written.
pub fn storage_steps(boundary: Boundary) -> &'static [&'static str] {
    match boundary {
        Boundary::Preflight => &["storage-write", "storage-read"],
        Boundary::BeforeKubeletRestart => &["storage-write"],
        _ => &["storage-read"],
    }
}

/// The boundary a storage check's claim is named after: the baseline's own, or the one
/// the writer before the restart and the reader after it share.
pub fn storage_claim_boundary(boundary: Boundary) -> Boundary {
    if boundary == Boundary::Preflight {
        Boundary::Preflight
    } else {
        Boundary::BeforeKubeletRestart
    }
}

/// Whether a storage check's claim may go after `boundary`'s probes gave `verdict`: not
/// after the writer (the reader after the restart needs it), nor after a read that gave no
/// answer (its retry reads the same nonce from the same volume).
pub fn claim_done(boundary: Boundary, verdict: &Verdict) -> bool {
    boundary != Boundary::BeforeKubeletRestart && !matches!(verdict, Verdict::Inconclusive { .. })
}

/// The nonce a storage writer leaves and its reader expects: the same for a run, a node and
/// a class, whoever computes it (a restarted daemon too).
pub fn storage_nonce(run: &str, node: &str, class: &str) -> String {
    format!(
        "{:08x}",
        crc32fast::hash(format!("{run}/{node}/{class}").as_bytes())
    )
}

/// A probe's claim of `class` (1 MiB, ReadWriteOnce), in the probe namespace.
pub fn probe_claim(name: &str, run: &str, check: &str, node: &str, class: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels(run, check, node, 0),
        },
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}},
        },
    })
}

/// What a DNS probe tries: the API's own name, the probe Service's name, and the
/// Service's ClusterIP dialled (through kube-proxy on the node) when it has one.
pub fn dns_targets(service: &str, cluster_ip: Option<&str>) -> Vec<String> {
    let mut t = vec![
        "kubernetes.default.svc.cluster.local".to_string(),
        format!("{service}.{NAMESPACE}.svc.cluster.local"),
    ];
    if let Some(ip) = cluster_ip.filter(|ip| !ip.is_empty() && *ip != "None") {
        t.push(format!("{ip}:{ECHO_PORT}"));
    }
    t
}

/// The DNS check's Service: the echo pods on `node` behind a ClusterIP, so the probe finds
/// it by name and reaches it through the node's kube-proxy.
pub fn dns_service(name: &str, run: &str, check: &str, node: &str, attempt: u32) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels(run, check, node, attempt),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_RUN: run, LABEL_CHECK: "echo", LABEL_NODE: node},
            "ports": [{"name": "http", "port": ECHO_PORT, "targetPort": ECHO_PORT, "protocol": "TCP"}],
        },
    })
}

pub(super) fn labels(run: &str, check: &str, node: &str, attempt: u32) -> Value {
    json!({
        LABEL_RUN: run,
        LABEL_CHECK: check.replace('/', "."),
        LABEL_NODE: node,
        LABEL_ATTEMPT: attempt.to_string(),
    })
}

/// What a probe pod tries, and with what.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOrders<'a> {
    /// `pod-network`, `host-network` (the same dials from the node's own network
    /// namespace), `dns`, `storage-write`, `storage-read`.
    pub kind: &'a str,
    /// What it dials or resolves.
    pub targets: &'a [String],
    /// What a storage writer leaves and its reader expects.
    pub nonce: &'a str,
    /// The claim a storage probe mounts at `/data`.
    pub claim: Option<&'a str>,
    /// `IP:port` of the echo pod on the probe's own node: each target that answered is
    /// asked (netexec's `/dial`) to dial it back, proving the way in as well as out.
    pub back_to: Option<&'a str>,
}

/// A probe pod on `node`. Pinned with `nodeName` (a cordoned node is checked before any
/// workload returns), tolerating every taint, never restarted, no service account token. A
/// storage probe is placed by a hostname selector instead: a claim that waits for its first
/// consumer is provisioned where the scheduler puts that pod, and a `nodeName` pod skips
/// the scheduler (it would wait forever); tolerating every taint still lets it onto the
/// cordoned node.
pub fn probe_pod(
    name: &str,
    run: &str,
    check: &str,
    node: &str,
    attempt: u32,
    orders: ProbeOrders<'_>,
    policy: &ChecksPolicy,
) -> Value {
    let ProbeOrders {
        kind,
        targets,
        nonce,
        claim,
        back_to,
    } = orders;
    let mut labels = labels(run, check, node, attempt);
    labels[LABEL_SUBJECT] = json!(node);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels,
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "probe",
                "image": policy.images.probe,
                "command": ["sh", "-c", PROBE_SCRIPT],
                "env": [
                    {"name": "UPGRADED_PROBE", "value": kind},
                    {"name": "UPGRADED_TARGETS", "value": targets.join(",")},
                    {"name": "UPGRADED_NONCE", "value": nonce},
                    {"name": "UPGRADED_BACK_TO", "value": back_to.unwrap_or_default()},
                ],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "terminationMessagePolicy": "File",
            }],
        },
    });
    if kind == "host-network" {
        pod["spec"]["hostNetwork"] = json!(true);
        pod["spec"]["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    if let Some(claim) = claim {
        let spec = &mut pod["spec"];
        if let Some(s) = spec.as_object_mut() {
            s.remove("nodeName");
        }
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        spec["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    }
    pod
}

/// An echo pod on `node` that pod-network probes dial (agnhost `netexec`).
pub fn echo_pod(
    name: &str,
    run: &str,
    (node, subject): (&str, &str),
    attempt: u32,
    policy: &ChecksPolicy,
) -> Value {
    let mut labels = labels(run, "echo", node, attempt);
    labels[LABEL_SUBJECT] = json!(subject);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels,
        },
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "echo",
                "image": policy.images.probe,
                "args": ["netexec", format!("--http-port={ECHO_PORT}")],
                "ports": [{"containerPort": ECHO_PORT}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
        },
    })
}

/// What a node's checks at one boundary add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepVerdict {
    /// Every check passed (or only warned).
    Passed,
    /// A check failed: what it does, and why, naming the checks and what they saw.
    Failed { severity: Severity, why: String },
    /// Some check gave no answer and none failed: retried, never a rollback.
    Inconclusive { why: String },
}

/// The step's verdict from each check's: at the preflight boundary, none (what fails there
/// is the baseline, a finding about the cluster as it was: recorded, and excluded from
/// that node's later verdicts, never blamed on the upgrade); after that, the harshest
/// failure decides (a halt over a rollback); warnings never fail the step; with no
/// failure, an inconclusive check makes the step inconclusive.
pub fn step_verdict(
    boundary: Boundary,
    results: &[(Check, Verdict)],
    on_gate_failure: OnGateFailure,
    proven: &std::collections::BTreeMap<String, String>,
) -> StepVerdict {
    if boundary == Boundary::Preflight {
        // The baseline: a failure is a finding about the cluster as it was, excluded from
        // later verdicts, except on the control plane, which must be healthy to start.
        let blocking: Vec<String> = results
            .iter()
            .filter_map(|(check, verdict)| match verdict {
                // It passed on this node's generation before the run changed anything: what
                // the run changed so far (the control plane) broke it.
                Verdict::Failed { detail, .. } if proven.contains_key(&check.id) => Some(format!(
                    "check {} passed on {} before the run changed anything and fails now, before this node is touched: {detail}; what the run changed so far (the control plane, the nodes before) broke it",
                    check.id, proven[&check.id]
                )),
                Verdict::Failed { detail, .. }
                    if super::baseline_finding(check) == super::BaselineFinding::Blocks =>
                {
                    Some(format!(
                        "check {} fails before the upgrade: {detail}; the control plane must be healthy before it is upgraded",
                        check.id
                    ))
                }
                // The probes' images are pulled here, before anything is touched: without
                // them every later check of the run would be inconclusive.
                Verdict::Inconclusive { why, facts } if facts.contains_key(super::verdict::FACT_IMAGE_PULL) => {
                    Some(format!(
                        "check {}: {why} at the baseline; every later check needs it: mirror the image into your registry and name it in checks.images, then resume",
                        check.id
                    ))
                }
                _ => None,
            })
            .collect();
        return if blocking.is_empty() {
            StepVerdict::Passed
        } else {
            StepVerdict::Failed {
                severity: Severity::Halt,
                why: blocking.join("; "),
            }
        };
    }
    let mut failed: Vec<(Severity, String)> = Vec::new();
    let mut unsure: Vec<String> = Vec::new();
    for (check, verdict) in results {
        match verdict {
            Verdict::Passed { .. } => {}
            Verdict::Failed { detail, .. } => {
                let severity = super::effective_severity(check, on_gate_failure);
                if severity != Severity::Warn {
                    failed.push((severity, format!("check {} failed: {detail}", check.id)));
                }
            }
            Verdict::Inconclusive { why, .. } => {
                unsure.push(format!("check {} was inconclusive: {why}", check.id));
            }
        }
    }
    if !failed.is_empty() {
        let severity = if failed.iter().any(|(s, _)| *s == Severity::Halt) {
            Severity::Halt
        } else {
            Severity::RollbackNode
        };
        let why: Vec<String> = failed.into_iter().map(|(_, w)| w).collect();
        return StepVerdict::Failed {
            severity,
            why: why.join("; "),
        };
    }
    if !unsure.is_empty() {
        return StepVerdict::Inconclusive {
            why: unsure.join("; "),
        };
    }
    StepVerdict::Passed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::builtin;
    use crate::event::Facts;

    fn peer(name: &str, generation: &str, cp: bool, pending: bool) -> Peer {
        Peer {
            name: name.into(),
            generation: generation.into(),
            control_plane: cp,
            not_yet_upgraded: pending,
            busy: false,
        }
    }

    #[test]
    fn a_node_dials_one_node_per_other_generation_one_pending_and_one_control_plane() {
        let peers = [
            peer("cp-1", "", true, false),
            peer("cp-2", "", true, false),
            peer("r640-01", "r640", false, false),
            peer("r640-02", "r640", false, true),
            peer("r740-01", "r740", false, true),
            peer("r740-02", "r740", false, true),
            peer("dl380-01", "dl380", false, true),
        ];
        // dl380-01 is both another generation and not yet upgraded: dialled once.
        assert_eq!(
            network_peers("r640-01", &peers),
            ["dl380-01", "r740-01", "cp-1"]
        );
        // Once the other generations are done, a pending node of its own is added.
        let later: Vec<Peer> = peers
            .iter()
            .map(|p| Peer {
                not_yet_upgraded: p.name == "r640-02",
                ..p.clone()
            })
            .collect();
        assert_eq!(
            network_peers("r640-01", &later),
            ["dl380-01", "r740-01", "r640-02", "cp-1"]
        );
        // Growing a generation adds nobody: O(generations).
        let mut many = peers.to_vec();
        for i in 3..200 {
            many.push(peer(&format!("r740-{i:03}"), "r740", false, true));
        }
        assert_eq!(network_peers("r640-01", &many).len(), 3);
        // A node the run is working on is never dialled.
        let busy: Vec<Peer> = peers
            .iter()
            .map(|p| Peer {
                busy: p.name == "dl380-01",
                ..p.clone()
            })
            .collect();
        assert_eq!(
            network_peers("r640-01", &busy),
            ["r740-01", "r640-02", "cp-1"]
        );
        // Alone in the cluster but for the control plane.
        assert_eq!(
            network_peers(
                "w",
                &[peer("w", "g", false, false), peer("cp", "", true, false)]
            ),
            ["cp"]
        );
    }

    #[test]
    fn probe_pods_are_pinned_tolerant_and_labelled() {
        let policy = ChecksPolicy::default();
        let targets = ["10.244.1.5:8080".to_string(), "10.244.2.9:8080".to_string()];
        let orders = ProbeOrders {
            kind: "pod-network",
            targets: &targets,
            nonce: "",
            claim: None,
            back_to: None,
        };
        let pod = probe_pod(
            "upg-pod-network-w-1-a2-0000",
            "run-1",
            "storage/local-path",
            "w-1",
            2,
            orders,
            &policy,
        );
        let storage = probe_pod(
            "s",
            "run-1",
            "storage/local-path",
            "w-1",
            1,
            ProbeOrders {
                kind: "storage-read",
                targets: &[],
                nonce: "n-1",
                claim: Some("c"),
                back_to: None,
            },
            &policy,
        );
        assert!(
            storage["spec"]["nodeName"].is_null(),
            "placed by the scheduler"
        );
        assert_eq!(
            storage["spec"]["nodeSelector"]["kubernetes.io/hostname"],
            "w-1"
        );
        assert_eq!(
            storage["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "c"
        );
        assert_eq!(storage["spec"]["containers"][0]["env"][2]["value"], "n-1");
        assert_eq!(pod["spec"]["nodeName"], "w-1");
        assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["metadata"]["namespace"], NAMESPACE);
        assert_eq!(pod["metadata"]["labels"][LABEL_CHECK], "storage.local-path");
        assert_eq!(pod["metadata"]["labels"][LABEL_ATTEMPT], "2");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][1]["value"],
            "10.244.1.5:8080,10.244.2.9:8080"
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], policy.images.probe);
        let echo = echo_pod("e", "run-1", ("w-2", "w-1"), 1, &policy);
        assert_eq!(echo["spec"]["nodeName"], "w-2");
        assert!(
            echo["spec"]["restartPolicy"].is_null(),
            "echo pods serve until deleted"
        );
    }

    #[test]
    fn the_harshest_failure_decides_warnings_pass_and_unsure_is_retried() {
        let all = builtin();
        let get = |id: &str| all.iter().find(|c| c.id == id).cloned().expect("built-in");
        let pass = Verdict::Passed {
            facts: Facts::new(),
        };
        let fail = |d: &str| Verdict::Failed {
            detail: d.into(),
            facts: Facts::new(),
        };
        let unsure = Verdict::Inconclusive {
            why: "the probe was evicted".into(),
            facts: Facts::new(),
        };
        let net = get("pod-network");
        let dns = get("dns");
        assert_eq!(
            step_verdict(
                Boundary::AfterBatch,
                &[(net.clone(), pass.clone()), (dns.clone(), pass.clone())],
                OnGateFailure::RollbackNode,
                &Default::default()
            ),
            StepVerdict::Passed
        );
        assert_eq!(
            step_verdict(
                Boundary::AfterBatch,
                &[
                    (net.clone(), fail("dial 10.244.1.5:8080: i/o timeout")),
                    (dns.clone(), unsure.clone())
                ],
                OnGateFailure::RollbackNode,
                &Default::default()
            ),
            StepVerdict::Failed {
                severity: Severity::RollbackNode,
                why: "check pod-network failed: dial 10.244.1.5:8080: i/o timeout".into()
            }
        );
        assert_eq!(
            step_verdict(
                Boundary::AfterBatch,
                &[(net.clone(), fail("x"))],
                OnGateFailure::Halt,
                &Default::default()
            ),
            StepVerdict::Failed {
                severity: Severity::Halt,
                why: "check pod-network failed: x".into()
            }
        );
        let warn = Check {
            severity: Severity::Warn,
            ..dns.clone()
        };
        assert_eq!(
            step_verdict(
                Boundary::AfterBatch,
                &[(warn, fail("slow"))],
                OnGateFailure::RollbackNode,
                &Default::default()
            ),
            StepVerdict::Passed
        );
        assert_eq!(
            step_verdict(
                Boundary::AfterBatch,
                &[(net, pass), (dns, unsure)],
                OnGateFailure::RollbackNode,
                &Default::default()
            ),
            StepVerdict::Inconclusive {
                why: "check dns was inconclusive: the probe was evicted".into()
            }
        );
    }

    #[test]
    fn what_fails_at_the_baseline_is_a_finding_not_a_failed_step() {
        let net = builtin()
            .into_iter()
            .find(|c| c.id == "pod-network")
            .expect("built-in");
        let fail = Verdict::Failed {
            detail: "dial: i/o timeout".into(),
            facts: Facts::new(),
        };
        assert_eq!(
            step_verdict(
                Boundary::Preflight,
                &[(net, fail)],
                OnGateFailure::RollbackNode,
                &Default::default()
            ),
            StepVerdict::Passed
        );
        // A control plane already failing blocks the run: nothing is upgraded on it.
        let etcd = builtin()
            .into_iter()
            .find(|c| c.id == "etcd-quorum")
            .expect("built-in");
        let no_quorum = Verdict::Failed {
            detail: "etcd has no quorum: 1 of 3 member(s) healthy".into(),
            facts: Facts::new(),
        };
        match step_verdict(
            Boundary::Preflight,
            &[(etcd, no_quorum)],
            OnGateFailure::RollbackNode,
            &Default::default(),
        ) {
            StepVerdict::Failed { severity, why } => {
                assert_eq!(severity, Severity::Halt);
                assert!(
                    why.contains("etcd-quorum fails before the upgrade"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A node check that passed on the generation's sample before the run changed anything
        // and fails at this node's own baseline is the run's doing: it halts.
        let dns_check = builtin()
            .into_iter()
            .find(|c| c.id == "dns")
            .expect("built-in");
        let lookup = Verdict::Failed {
            detail: "lookup kubernetes.default.svc.cluster.local: i/o timeout".into(),
            facts: Facts::new(),
        };
        let proven = [("dns".to_string(), "w-1".to_string())].into();
        assert!(matches!(
            step_verdict(Boundary::Preflight, &[(dns_check, lookup)], OnGateFailure::RollbackNode, &proven),
            StepVerdict::Failed { severity: Severity::Halt, why } if why.contains("passed on w-1 before the run changed anything")
        ));
        // A probe whose image cannot be pulled blocks there too; another inconclusive
        // probe (evicted) does not.
        let dns = builtin()
            .into_iter()
            .find(|c| c.id == "dns")
            .expect("built-in");
        let end = |d| crate::check::ProbeEnd {
            disruption: Some(d),
            ..Default::default()
        };
        let pull = crate::check::classify(&end(crate::check::Disruption::ImagePull(
            "ImagePullBackOff".into(),
        )));
        assert!(matches!(
            step_verdict(Boundary::Preflight, &[(dns.clone(), pull)], OnGateFailure::RollbackNode, &Default::default()),
            StepVerdict::Failed { severity: Severity::Halt, why } if why.contains("checks.images")
        ));
        let evicted = crate::check::classify(&end(crate::check::Disruption::Evicted));
        assert_eq!(
            step_verdict(
                Boundary::Preflight,
                &[(dns, evicted)],
                OnGateFailure::RollbackNode,
                &Default::default()
            ),
            StepVerdict::Passed
        );
    }

    #[test]
    fn only_node_checks_run_in_the_step() {
        let policy = ChecksPolicy {
            storage_classes: vec!["standard".into()],
            ..ChecksPolicy::default()
        };
        let (on, _) =
            crate::check::catalog(&policy, &ClusterHas::everything(&policy)).expect("catalog");
        let ids = |b: Boundary| -> Vec<String> {
            node_probe_checks(&on, b)
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(
            ids(Boundary::AfterBatch),
            ["pod-network", "dns", "storage/standard", "devices"]
        );
        // Before the kubelet restart only the storage writer runs.
        assert_eq!(ids(Boundary::BeforeKubeletRestart), ["storage/standard"]);
        assert!(ids(Boundary::AfterControlPlane).is_empty());
        assert_eq!(
            storage_steps(Boundary::Preflight),
            ["storage-write", "storage-read"]
        );
        assert_eq!(storage_steps(Boundary::AfterBatch), ["storage-read"]);
        assert_eq!(
            storage_claim_boundary(Boundary::AfterCanary),
            storage_claim_boundary(Boundary::BeforeKubeletRestart)
        );
        let pass = Verdict::Passed {
            facts: Facts::new(),
        };
        let unsure = Verdict::Inconclusive {
            why: "evicted".into(),
            facts: Facts::new(),
        };
        assert!(!claim_done(Boundary::BeforeKubeletRestart, &pass));
        assert!(claim_done(Boundary::AfterBatch, &pass));
        assert!(!claim_done(Boundary::AfterBatch, &unsure));
        assert!(claim_done(Boundary::Preflight, &pass));
        assert_eq!(
            storage_nonce("r", "w-1", "standard"),
            storage_nonce("r", "w-1", "standard")
        );
        assert_ne!(
            storage_nonce("r", "w-1", "standard"),
            storage_nonce("r", "w-2", "standard")
        );
    }
}
