//! The checks a checks step runs for the run rather than for its node: those of generation
//! and cluster scope (a scheduling Job per generation, the addons' images, Prometheus, the
//! ingress, the operator's checks), what their subjects are called, the Jobs they create,
//! and what each answer means. Which step carries them is `RunState::node_checks`'s choice.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::probe::NAMESPACE;
use super::{Boundary, Check, CheckKind, ChecksPolicy, Disruption, ProbeEnd, Scope, Verdict};
use crate::facts::Facts;
use crate::version::Version;

/// The subject of a cluster-scope check (never a node's name: those have no parentheses).
pub const CLUSTER: &str = "(cluster)";

/// The subject of a generation-scope check.
pub fn generation_subject(generation: &str) -> String {
    format!("(generation {generation})")
}

/// How long Prometheus is asked again while a new problem waits for its confirmation.
pub const PROMETHEUS_INTERVAL_SECS: u64 = 30;

/// The fact a Prometheus run records its problems under (one per line): at the baseline,
/// what later runs are compared with.
pub const FACT_PROBLEMS: &str = "problems";

/// A check the step runs for the run, on one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCheck {
    pub check: Check,
    /// `(cluster)`, `(generation NAME)`, or the node's name for a node-scope user check.
    pub subject: String,
    /// The generation a generation-scope check is about.
    pub generation: Option<String>,
    /// Started at this boundary and never given a verdict (the daemon stopped): that attempt,
    /// whose objects are adopted.
    pub resume: Option<u32>,
    /// What the baseline's run on this subject saw (Prometheus: its targets down and alerts
    /// firing), which later runs do not count.
    pub baseline: BTreeSet<String>,
}

impl CheckKind {
    /// Checks the checks step runs itself when their scope is the generation or the
    /// cluster (CrashLoopBackOff is the verify gate's).
    pub fn runs_for_the_run(&self) -> bool {
        matches!(
            self,
            CheckKind::ApiserverReadyz
                | CheckKind::MirrorPodsReady
                | CheckKind::EtcdQuorum
                | CheckKind::Scheduling
                | CheckKind::Addons
                | CheckKind::Prometheus { .. }
                | CheckKind::Ingress { .. }
                | CheckKind::UserJob { .. }
                | CheckKind::UserHttp { .. }
                | CheckKind::UserCommand { .. }
        )
    }

    /// The operator's own checks.
    pub fn is_user(&self) -> bool {
        matches!(
            self,
            CheckKind::UserJob { .. } | CheckKind::UserHttp { .. } | CheckKind::UserCommand { .. }
        )
    }
}

/// The generation- and cluster-scope checks that run at `boundary`.
pub fn run_scope_checks(checks: &[Check], boundary: Boundary) -> Vec<Check> {
    checks
        .iter()
        .filter(|c| c.scope != Scope::Node && c.runs_at(boundary) && c.kind.runs_for_the_run())
        .cloned()
        .collect()
}

/// The subjects a check of `scope` has at a boundary whose generations are `generations`.
pub fn subjects(scope: Scope, generations: &[String]) -> Vec<(String, Option<String>)> {
    match scope {
        Scope::Cluster => vec![(CLUSTER.to_string(), None)],
        Scope::Generation => generations
            .iter()
            .map(|g| (generation_subject(g), Some(g.clone())))
            .collect(),
        Scope::Node => Vec::new(),
    }
}

/// A probe object's labels, its subject made a label value (`(generation x)` →
/// `generation-x`).
fn labels(run: &str, check: &str, subject: &str, attempt: u32) -> Value {
    let subject: String = subject
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    super::probe::labels(run, check, subject.trim_matches('-'), attempt)
}

/// The scheduling check's Job for one generation: one small pod the scheduler must place on
/// a node of `generation` (a nodeSelector on the generation label, no `nodeName`), exiting 0
/// once it runs. Not retried by the Job controller: a pod that cannot be placed is the
/// answer.
pub fn scheduling_job(
    name: &str,
    run: &str,
    check: &str,
    attempt: u32,
    (label, generation): (&str, &str),
    policy: &ChecksPolicy,
) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels(run, check, &generation_subject(generation), attempt),
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels(run, check, &generation_subject(generation), attempt)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "nodeSelector": {label: generation},
                    "containers": [{
                        "name": "scheduled",
                        "image": policy.images.probe,
                        "command": ["sh", "-c", "echo '{\"ok\":true,\"detail\":\"scheduled and ran\"}' > /dev/termination-log"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        "terminationMessagePolicy": "File",
                    }],
                },
            },
        },
    })
}

/// Why an operator's Job manifest cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checks.user {check:?}: the job is not a usable Job manifest: {why}")]
pub struct ManifestError {
    pub check: String,
    pub why: String,
}

/// The operator's Job, as the daemon creates it: their manifest (JSON or, through the
/// planner, YAML turned into JSON) renamed and labelled like every probe object, in the
/// probe namespace, never retried by the Job controller; on a node for a node-scope check
/// (pinned, tolerating every taint, like a probe pod).
pub fn user_job(
    manifest: &Value,
    name: &str,
    run: &str,
    check: &str,
    attempt: u32,
    node: Option<&str>,
) -> Result<Value, ManifestError> {
    let err = |why: &str| ManifestError {
        check: check.to_string(),
        why: why.to_string(),
    };
    if manifest["kind"] != "Job" {
        return Err(err("its kind is not Job"));
    }
    if !manifest["spec"]["template"]["spec"]["containers"].is_array() {
        return Err(err("it has no spec.template.spec.containers"));
    }
    let mut job = manifest.clone();
    job["apiVersion"] = json!("batch/v1");
    job["metadata"] = json!({
        "name": name,
        "namespace": NAMESPACE,
        "labels": labels(run, check, node.unwrap_or(CLUSTER), attempt),
        "annotations": manifest["metadata"]["annotations"].clone(),
    });
    if job["metadata"]["annotations"].is_null()
        && let Some(m) = job["metadata"].as_object_mut()
    {
        m.remove("annotations");
    }
    job["spec"]["backoffLimit"] = json!(0);
    let spec = &mut job["spec"]["template"]["spec"];
    spec["restartPolicy"] = json!("Never");
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
        spec["tolerations"] = json!([{"operator": "Exists"}]);
    }
    Ok(job)
}

/// A Job as the checks step sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSeen {
    /// `Complete`.
    pub complete: bool,
    /// `Failed`, with its reason and message.
    pub failed: Option<String>,
    /// Its pod's end (exit code, termination message, a disruption).
    pub pod: Option<ProbeEnd>,
    /// The node its pod was placed on, if the scheduler placed it.
    pub node: Option<String>,
    /// Why its pod is not placed (`Unschedulable: 0/12 nodes are available...`).
    pub unschedulable: Option<String>,
}

/// A Job's verdict: complete passes and failed fails (its pod's termination message says
/// why); a pod that could not even be placed fails a scheduling check (that is what it
/// checks) once its time is up; a disrupted pod, or one still running at its timeout, is
/// inconclusive.
pub fn job_verdict(kind: &CheckKind, seen: &JobSeen, timed_out: bool) -> Option<Verdict> {
    let mut facts = Facts::new();
    if let Some(node) = &seen.node {
        facts.insert("node".into(), node.clone());
    }
    if let Some(end) = &seen.pod
        && end.disruption.is_some()
    {
        return Some(super::classify(end));
    }
    if seen.complete {
        return Some(Verdict::Passed { facts });
    }
    if let Some(why) = &seen.failed {
        let detail = match seen.pod.as_ref().map(super::classify) {
            Some(Verdict::Failed { detail, .. }) => format!("{why}: {detail}"),
            _ => why.clone(),
        };
        return Some(Verdict::Failed { detail, facts });
    }
    if !timed_out {
        return None;
    }
    Some(match (&seen.unschedulable, kind) {
        (Some(why), CheckKind::Scheduling) => Verdict::Failed {
            detail: format!("the scheduler placed no pod: {why}"),
            facts,
        },
        (None, CheckKind::Scheduling) if seen.node.is_none() => Verdict::Failed {
            detail: "the scheduler placed no pod".into(),
            facts,
        },
        _ => Verdict::Inconclusive {
            why: "the Job did not finish within the check's timeout".into(),
            facts,
        },
    })
}

/// The targets down and alerts firing in Prometheus's answers to `/api/v1/targets` and
/// `/api/v1/alerts`, one line each (`target kubelet 10.0.0.7:10250 down`, `alert
/// KubeNodeNotReady node=w-3`).
pub fn prometheus_problems(targets: &Value, alerts: &Value) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for (what, body) in [("targets", targets), ("alerts", alerts)] {
        if body["status"] != "success" {
            return Err(format!(
                "/api/v1/{what} answered status {}",
                body["status"].as_str().unwrap_or("(none)")
            ));
        }
    }
    let Some(active) = targets["data"]["activeTargets"].as_array() else {
        return Err("/api/v1/targets has no data.activeTargets".into());
    };
    for t in active {
        if t["health"] == "down" {
            let pool = t["scrapePool"]
                .as_str()
                .or_else(|| t["labels"]["job"].as_str())
                .unwrap_or("?");
            let instance = t["labels"]["instance"]
                .as_str()
                .or_else(|| t["scrapeUrl"].as_str())
                .unwrap_or("?");
            out.insert(format!("target {pool} {instance} down"));
        }
    }
    let Some(alerts) = alerts["data"]["alerts"].as_array() else {
        return Err("/api/v1/alerts has no data.alerts".into());
    };
    for a in alerts {
        if a["state"] != "firing" {
            continue;
        }
        let Some(labels) = a["labels"].as_object() else {
            continue;
        };
        let name = labels
            .get("alertname")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut rest: Vec<String> = labels
            .iter()
            .filter(|(k, _)| *k != "alertname" && *k != "severity")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        rest.sort();
        out.insert(
            format!("alert {name} {}", rest.join(","))
                .trim()
                .to_string(),
        );
    }
    Ok(out)
}

/// The problems a Prometheus verdict recorded (`FACT_PROBLEMS`), back as a set.
pub fn problems_of(facts: &Facts) -> BTreeSet<String> {
    facts
        .get(FACT_PROBLEMS)
        .map(|p| {
            p.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// One more look at Prometheus: `None` while a new problem waits for its confirmation
/// (`fire_after` looks in a row); otherwise the verdict. At the baseline every problem is
/// recorded and none fails.
pub fn prometheus_verdict(
    check: &Check,
    boundary: Boundary,
    tally: &mut super::ProblemTally,
    now: &BTreeSet<String>,
) -> Option<Verdict> {
    let mut facts = Facts::new();
    facts.insert(
        FACT_PROBLEMS.into(),
        now.iter().cloned().collect::<Vec<_>>().join("\n"),
    );
    if boundary == Boundary::Preflight {
        return Some(Verdict::Passed { facts });
    }
    tally.observe(now);
    let fired = tally.fired(check);
    if !fired.is_empty() {
        return Some(Verdict::Failed {
            detail: format!(
                "new since the baseline, seen {} time(s) in a row: {}",
                check.fire_after.max(1),
                fired.join("; ")
            ),
            facts,
        });
    }
    tally.streak.is_empty().then_some(Verdict::Passed { facts })
}

/// An HTTP probe's verdict: the expected status passes, another fails; no answer at all
/// (refused, reset) fails too, as the thing checked did not answer; a timeout is
/// inconclusive.
pub fn http_verdict(url: &str, answer: Result<u16, HttpTrouble>, expect: u16) -> Verdict {
    let mut facts = Facts::new();
    match answer {
        Ok(status) => {
            facts.insert("status".into(), status.to_string());
            if status == expect {
                Verdict::Passed { facts }
            } else {
                Verdict::Failed {
                    detail: format!("GET {url} answered {status}, expected {expect}"),
                    facts,
                }
            }
        }
        Err(HttpTrouble::NoAnswer(why)) => Verdict::Failed {
            detail: format!("GET {url} got no answer: {why}"),
            facts,
        },
        Err(HttpTrouble::TimedOut) => Verdict::Inconclusive {
            why: format!("GET {url} did not answer within the check's timeout"),
            facts,
        },
    }
}

/// Why an HTTP probe has no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTrouble {
    NoAnswer(String),
    TimedOut,
}

/// A command's verdict, by the probes' convention: exit 0 passes, 1 fails, any other code,
/// a signal or a timeout is inconclusive; the last line of its output, a `ProbeReport`
/// or plain text, explains.
pub fn command_verdict(exit_code: Option<i32>, output: &str, timed_out: bool) -> Verdict {
    super::classify(&ProbeEnd {
        exit_code,
        message: Some(output.to_string()),
        disruption: timed_out.then_some(Disruption::TimedOut),
    })
}

/// The CoreDNS image tag kubeadm installs with each Kubernetes minor (kubeadm's
/// `constants.CoreDNSVersion`), for the addons check. A minor missing here is not judged.
pub const COREDNS_BY_MINOR: &[(u16, &str)] = &[
    (29, "v1.11.1"),
    (30, "v1.11.3"),
    (31, "v1.11.3"),
    (32, "v1.11.3"),
    (33, "v1.12.0"),
    (34, "v1.12.1"),
    (35, "v1.12.1"),
];

/// The CoreDNS tag kubeadm sets for `version`'s minor.
pub fn coredns_for(version: Version) -> Option<&'static str> {
    COREDNS_BY_MINOR
        .iter()
        .find(|(m, _)| *m == version.minor)
        .map(|(_, t)| *t)
}

/// An image reference's tag (`registry.k8s.io/kube-proxy:v1.35.3@sha256:…` → `v1.35.3`).
pub fn image_tag(image: &str) -> Option<&str> {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

/// What puts the addons at the control plane's version, in the addons check's failure.
pub const ADDONS_FIX: &str = "to fix, on a control-plane node: kubeadm upgrade apply phase addon all (a kubeadm with upgrade phases; the 1.34 one has them), or kubeadm init phase addon all --config FILE with FILE the ClusterConfiguration of kubectl -n kube-system get configmap kubeadm-config; then resume";

/// The addons check: kube-proxy's image at the control plane's version, CoreDNS's at the
/// tag kubeadm sets for it. An addon the cluster does not run (`None`) is not judged.
pub fn addons_verdict(
    control_plane: Version,
    kube_proxy: Option<&str>,
    coredns: Option<&str>,
) -> Verdict {
    let mut facts = Facts::new();
    let mut wrong = Vec::new();
    if let Some(image) = kube_proxy {
        facts.insert("kube_proxy_image".into(), image.to_string());
        let want = control_plane.to_string();
        if image_tag(image) != Some(want.as_str()) {
            wrong.push(format!("kube-proxy runs {image}, not {want}"));
        }
    }
    if let Some(image) = coredns {
        facts.insert("coredns_image".into(), image.to_string());
        if let Some(want) = coredns_for(control_plane)
            && image_tag(image) != Some(want)
        {
            wrong.push(format!(
                "CoreDNS runs {image}, not {want} (kubeadm's for {control_plane}; kubeadm skips the addons when the control plane was not upgraded node by node)"
            ));
        }
    }
    if !wrong.is_empty() {
        wrong.push(ADDONS_FIX.to_string());
    }
    super::verdict::passed_unless(wrong, facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::probe::{LABEL_ATTEMPT, LABEL_NODE};
    use crate::check::{ProblemTally, builtin};

    fn find(id: &str) -> Check {
        builtin()
            .into_iter()
            .find(|c| c.id == id)
            .expect("built-in")
    }

    #[test]
    fn the_run_scope_checks_are_the_generation_and_cluster_ones_the_step_runs() {
        let all = builtin();
        let ids = |b| {
            run_scope_checks(&all, b)
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        };
        // CrashLoopBackOff is the verify gate's.
        let cp = ["apiserver-readyz", "mirror-pods", "etcd-quorum"];
        let with_cp = |rest: &[&str]| -> Vec<String> {
            cp.iter().chain(rest).map(|s| s.to_string()).collect()
        };
        assert_eq!(
            ids(Boundary::Preflight),
            with_cp(&["scheduling", "prometheus", "ingress"])
        );
        assert_eq!(ids(Boundary::AfterControlPlaneNode), with_cp(&[]));
        assert_eq!(
            ids(Boundary::AfterControlPlane),
            with_cp(&["addons", "scheduling", "prometheus", "ingress"])
        );
        assert_eq!(ids(Boundary::AfterCanary), ["prometheus", "ingress"]);
        assert_eq!(
            ids(Boundary::Final),
            with_cp(&["addons", "scheduling", "prometheus", "ingress"])
        );
        assert!(ids(Boundary::BeforeKubeletRestart).is_empty());
    }

    #[test]
    fn subjects_are_never_node_names() {
        assert_eq!(subjects(Scope::Cluster, &[]), [(CLUSTER.to_string(), None)]);
        let g = subjects(Scope::Generation, &["dell-r640".into(), "hp-dl380".into()]);
        assert_eq!(
            g[1],
            ("(generation hp-dl380)".into(), Some("hp-dl380".into()))
        );
        assert!(
            g.iter().all(|(s, _)| s.contains('(')),
            "DNS-1123 names have none"
        );
    }

    #[test]
    fn the_scheduling_job_is_placed_by_the_scheduler_on_its_generation() {
        let job = scheduling_job(
            "upg-x",
            "run-1",
            "scheduling",
            2,
            ("node.kubernetes.io/instance-type", "dell-r640"),
            &ChecksPolicy::default(),
        );
        let spec = &job["spec"]["template"]["spec"];
        assert_eq!(
            spec["nodeSelector"]["node.kubernetes.io/instance-type"],
            "dell-r640"
        );
        assert!(spec["nodeName"].is_null(), "the scheduler places it");
        assert!(spec["tolerations"].is_null(), "only where ordinary pods go");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["metadata"]["namespace"], NAMESPACE);
        assert_eq!(job["metadata"]["labels"][LABEL_ATTEMPT], "2");
        assert_eq!(
            job["metadata"]["labels"][LABEL_NODE],
            "generation-dell-r640"
        );
    }

    #[test]
    fn a_users_job_is_renamed_labelled_and_never_retried() {
        let manifest = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "smoke", "namespace": "default", "annotations": {"a": "b"}},
            "spec": {"backoffLimit": 6, "template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "t", "image": "curl"}]}}},
        });
        let job =
            user_job(&manifest, "upg-smoke", "r", "user/smoke", 1, Some("w-1")).expect("usable");
        assert_eq!(job["metadata"]["name"], "upg-smoke");
        assert_eq!(job["metadata"]["namespace"], NAMESPACE);
        assert_eq!(job["metadata"]["annotations"]["a"], "b");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        let spec = &job["spec"]["template"]["spec"];
        assert_eq!(
            (&spec["restartPolicy"], &spec["nodeName"]),
            (&json!("Never"), &json!("w-1"))
        );
        let cluster = user_job(&manifest, "n", "r", "user/smoke", 1, None).expect("usable");
        assert!(cluster["spec"]["template"]["spec"]["nodeName"].is_null());
        let pod = json!({"kind": "Pod", "spec": {}});
        let err = user_job(&pod, "n", "r", "user/smoke", 1, None).expect_err("not a Job");
        assert!(err.to_string().contains("kind is not Job"), "{err}");
    }

    #[test]
    fn a_job_passes_fails_waits_or_says_nothing() {
        let sched = CheckKind::Scheduling;
        let done = JobSeen {
            complete: true,
            node: Some("w-1".into()),
            ..JobSeen::default()
        };
        assert!(matches!(
            job_verdict(&sched, &done, false),
            Some(Verdict::Passed { .. })
        ));
        let running = JobSeen {
            node: Some("w-1".into()),
            ..JobSeen::default()
        };
        assert_eq!(job_verdict(&sched, &running, false), None, "still running");
        assert!(matches!(
            job_verdict(&sched, &running, true),
            Some(Verdict::Inconclusive { .. })
        ));
        let unplaced = JobSeen {
            unschedulable: Some("0/3 nodes are available".into()),
            ..JobSeen::default()
        };
        assert!(matches!(
            job_verdict(&sched, &unplaced, true),
            Some(Verdict::Failed { detail, .. }) if detail.contains("0/3 nodes")
        ));
        let user = CheckKind::UserJob {
            manifest: String::new(),
        };
        assert!(matches!(
            job_verdict(&user, &unplaced, true),
            Some(Verdict::Inconclusive { .. })
        ));
        let failed = JobSeen {
            failed: Some("BackoffLimitExceeded".into()),
            pod: Some(ProbeEnd {
                exit_code: Some(1),
                message: Some("{\"ok\":false,\"detail\":\"checkout returned 500\"}".into()),
                disruption: None,
            }),
            ..JobSeen::default()
        };
        assert!(matches!(
            job_verdict(&user, &failed, false),
            Some(Verdict::Failed { detail, .. }) if detail.contains("checkout returned 500")
        ));
        let evicted = JobSeen {
            failed: Some("BackoffLimitExceeded".into()),
            pod: Some(ProbeEnd {
                exit_code: Some(137),
                message: None,
                disruption: Some(Disruption::Evicted),
            }),
            ..JobSeen::default()
        };
        assert!(matches!(
            job_verdict(&user, &evicted, false),
            Some(Verdict::Inconclusive { .. })
        ));
    }

    fn prometheus_answers(down: &[&str], firing: &[&str]) -> (Value, Value) {
        let mut targets = vec![
            json!({"scrapePool": "kubelet", "labels": {"instance": "up:10250"}, "health": "up"}),
        ];
        targets.extend(down.iter().map(
            |i| json!({"scrapePool": "kubelet", "labels": {"instance": i}, "health": "down"}),
        ));
        let alerts: Vec<Value> = firing
            .iter()
            .map(|n| json!({"labels": {"alertname": "KubeNodeNotReady", "node": n, "severity": "warning"}, "state": "firing"}))
            .chain([json!({"labels": {"alertname": "Pending"}, "state": "pending"})])
            .collect();
        (
            json!({"status": "success", "data": {"activeTargets": targets}}),
            json!({"status": "success", "data": {"alerts": alerts}}),
        )
    }

    #[test]
    fn prometheus_answers_become_problems() {
        let (t, a) = prometheus_answers(&["w-3:10250"], &["w-3"]);
        let p = prometheus_problems(&t, &a).expect("parsed");
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            [
                "alert KubeNodeNotReady node=w-3",
                "target kubelet w-3:10250 down"
            ]
        );
        let err = prometheus_problems(&json!({"status": "error"}), &a).expect_err("refused");
        assert!(
            err.contains("/api/v1/targets answered status error"),
            "{err}"
        );
        let facts: Facts = [(FACT_PROBLEMS.to_string(), "a\nb".to_string())].into();
        assert_eq!(problems_of(&facts).len(), 2);
    }

    #[test]
    fn a_problem_at_the_baseline_never_fires_a_new_one_fires_once_confirmed() {
        let check = find("prometheus");
        assert_eq!(check.fire_after, 2);
        let (t, a) = prometheus_answers(&["w-3:10250"], &[]);
        let base = prometheus_problems(&t, &a).expect("parsed");
        let at_baseline = prometheus_verdict(
            &check,
            Boundary::Preflight,
            &mut ProblemTally::default(),
            &base,
        );
        let Some(Verdict::Passed { facts }) = at_baseline else {
            panic!("the baseline records, never fails: {at_baseline:?}");
        };
        assert_eq!(problems_of(&facts), base);
        let mut tally = ProblemTally::new(base.clone());
        assert!(matches!(
            prometheus_verdict(&check, Boundary::AfterBatch, &mut tally, &base),
            Some(Verdict::Passed { .. })
        ));
        let (t, a) = prometheus_answers(&["w-3:10250", "w-9:10250"], &[]);
        let now = prometheus_problems(&t, &a).expect("parsed");
        let mut tally = ProblemTally::new(base.clone());
        assert_eq!(
            prometheus_verdict(&check, Boundary::AfterBatch, &mut tally, &now),
            None,
            "seen once: look again"
        );
        let second = prometheus_verdict(&check, Boundary::AfterBatch, &mut tally, &now);
        assert!(
            matches!(&second, Some(Verdict::Failed { detail, .. }) if detail.contains("w-9") && !detail.contains("w-3")),
            "{second:?}"
        );
        // Gone at the second look: passes.
        let mut tally = ProblemTally::new(base.clone());
        assert_eq!(
            prometheus_verdict(&check, Boundary::AfterBatch, &mut tally, &now),
            None
        );
        assert!(matches!(
            prometheus_verdict(&check, Boundary::AfterBatch, &mut tally, &base),
            Some(Verdict::Passed { .. })
        ));
    }

    #[test]
    fn http_and_command_answers() {
        let url = "http://127.0.0.1:8080/healthz";
        assert!(matches!(
            http_verdict(url, Ok(200), 200),
            Verdict::Passed { .. }
        ));
        assert!(matches!(
            http_verdict(url, Ok(503), 200),
            Verdict::Failed { detail, .. } if detail.contains("answered 503, expected 200")
        ));
        assert!(matches!(
            http_verdict(url, Err(HttpTrouble::NoAnswer("refused".into())), 200),
            Verdict::Failed { .. }
        ));
        assert!(matches!(
            http_verdict(url, Err(HttpTrouble::TimedOut), 200),
            Verdict::Inconclusive { .. }
        ));
        assert!(matches!(
            command_verdict(Some(0), "", false),
            Verdict::Passed { .. }
        ));
        assert!(matches!(
            command_verdict(Some(1), "pg replica lag 40s\n", false),
            Verdict::Failed { detail, .. } if detail == "pg replica lag 40s"
        ));
        assert!(matches!(
            command_verdict(Some(2), "", false),
            Verdict::Inconclusive { .. }
        ));
        assert!(matches!(
            command_verdict(None, "", false),
            Verdict::Inconclusive { .. }
        ));
        assert!(matches!(
            command_verdict(Some(0), "", true),
            Verdict::Inconclusive { .. }
        ));
    }

    #[test]
    fn addons_at_the_versions_kubeadm_sets() {
        let v: Version = "v1.34.2".parse().expect("v");
        assert_eq!(
            image_tag("registry.k8s.io/kube-proxy:v1.34.2@sha256:ab"),
            Some("v1.34.2")
        );
        assert_eq!(image_tag("localhost:5000/kube-proxy"), None);
        assert!(matches!(
            addons_verdict(
                v,
                Some("registry.k8s.io/kube-proxy:v1.34.2"),
                Some("registry.k8s.io/coredns/coredns:v1.12.1")
            ),
            Verdict::Passed { .. }
        ));
        let stale = addons_verdict(
            v,
            Some("registry.k8s.io/kube-proxy:v1.33.5"),
            Some("registry.k8s.io/coredns/coredns:v1.12.0"),
        );
        let Verdict::Failed { detail, facts } = stale else {
            panic!("{stale:?}");
        };
        assert!(detail.contains("kube-proxy runs registry.k8s.io/kube-proxy:v1.33.5, not v1.34.2"));
        assert!(
            detail.contains("CoreDNS runs registry.k8s.io/coredns/coredns:v1.12.0, not v1.12.1")
        );
        assert!(
            detail.contains("kubeadm upgrade apply phase addon all"),
            "{detail}"
        );
        assert_eq!(
            facts["coredns_image"],
            "registry.k8s.io/coredns/coredns:v1.12.0"
        );
        // No kube-proxy (a CNI replaces it), an unknown minor: not judged.
        let old: Version = "v1.20.0".parse().expect("v");
        assert!(matches!(
            addons_verdict(old, None, Some("coredns:1.7.0")),
            Verdict::Passed { .. }
        ));
        for (minor, tag) in COREDNS_BY_MINOR {
            assert!(tag.starts_with("v1."), "{minor}: {tag}");
        }
    }
}
