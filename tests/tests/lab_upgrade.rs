//! End to end in the lab: the real daemon upgrades 1 control-plane node + 3 workers from
//! 1.33.5 to 1.35.3 over real SSH (stub kubeadm/apt/systemctl moving the sim), with real etcd
//! snapshots, the sim's Kubernetes API through the kube adapter, and progress published to a
//! real nats-server's JetStream. Then the same with `kill -9` of the daemon at 20+ random
//! moments and a NATS outage in the middle.
//!
//! Needs root (CI runs as root); without it these tests fail, they never skip.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use rand::Rng;
use serde_json::Value;
use upgraded_ctl::Client;
use upgraded_sim::{Clock, SimServer, scenario};
use upgraded_tests::lab::{Lab, LabSpec, NodeSpec, leftovers};
use upgraded_tests::nats::NatsServer;

/// Labs are heavy on two cores: one test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
drainTimeout: 5m
retries: {maxAttempts: 5, backoff: 2s, maxBackoff: 10s}
node:
  etcd: {endpoints: 'http://127.0.0.1:2379', cacert: '', cert: '', key: ''}
";

const NODES: [&str; 4] = ["cp-1", "w-1", "w-2", "w-3"];

struct Setup {
    lab: Lab,
    sim: SimServer,
    nats: NatsServer,
    base: tempfile::TempDir,
    time_scale: u32,
}

impl Setup {
    /// The sim's `lab` scenario on lab nodes of the same names.
    fn new(time_scale: u32) -> Setup {
        Setup::of("lab", &NODES, time_scale)
    }

    /// Scenario `name`, whose nodes are `nodes` (`cp-*` control-plane nodes).
    fn of(name: &str, nodes: &[&str], time_scale: u32) -> Setup {
        let lab = Lab::start(LabSpec {
            nodes: nodes
                .iter()
                .map(|n| NodeSpec {
                    name: (*n).into(),
                    control_plane: n.starts_with("cp-"),
                })
                .collect(),
            version: (1, 33, 5),
            stub: env!("CARGO_BIN_EXE_labstub").into(),
        })
        .expect("the lab starts (needs root)");
        let world = scenario::build(name, Clock::real(f64::from(time_scale)), 11).expect("lab");
        let sim = SimServer::start(world, std::net::SocketAddr::new(lab.host_addr.into(), 0))
            .expect("the sim serves on the lab bridge");
        lab.set_sim_url(&sim.url()).expect("sim URL");
        let nats =
            NatsServer::start().expect("nats-server starts (the README's setup installs it)");
        let base = tempfile::tempdir().expect("tmp");
        std::fs::write(
            base.path().join("kubeconfig"),
            upgraded_sim::kubeconfig(&sim.url()),
        )
        .expect("kubeconfig");
        std::fs::write(base.path().join("policy.yaml"), POLICY).expect("policy");
        std::fs::write(lab.root.join("ssh_config"), lab.ssh_config()).expect("ssh_config");
        Setup {
            lab,
            sim,
            nats,
            base,
            time_scale,
        }
    }

    fn control_dir(&self) -> PathBuf {
        self.lab.root.join("ssh")
    }

    fn data(&self) -> PathBuf {
        self.base.path().join("data")
    }

    async fn daemon(&self) -> (common::Daemon, Client) {
        let b = self.base.path();
        let mut args: Vec<std::ffi::OsString> = vec![
            "--data-dir".into(),
            self.data().into(),
            "--socket".into(),
            b.join("api.sock").into(),
            "--kubeconfig".into(),
            b.join("kubeconfig").into(),
            "--policy".into(),
            b.join("policy.yaml").into(),
            "--ssh-config".into(),
            self.lab.root.join("ssh_config").into(),
            "--ssh-control-dir".into(),
            self.control_dir().into(),
            "--nats-url".into(),
            self.nats.url().into(),
            "--time-scale".into(),
            self.time_scale.to_string().into(),
        ];
        for a in [
            "--ssh-control-persist-secs",
            "3",
            "--ssh-alive-interval-secs",
            "1",
            "--ssh-connect-timeout-secs",
            "3",
            "--command-timeout-secs",
            "60",
            "--cluster-name",
            "lab",
            "--nats-ack-timeout-secs",
            "1",
        ] {
            args.push(a.into());
        }
        common::spawn_upgraded(
            &b.join("api.sock"),
            &args,
            "warn,upgraded_daemon::outbox=error",
        )
        .await
    }

    /// Samples every budget's slack (healthy − desired) until stopped; returns the minimum.
    fn watch_budgets(&self) -> (Arc<AtomicBool>, Arc<AtomicI64>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(AtomicI64::new(i64::MAX));
        let sim = self.sim.sim.clone();
        let (s, m) = (stop.clone(), min.clone());
        let h = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                {
                    let w = sim.world();
                    for p in w.pdbs.values() {
                        let st = w.pdb_status(p);
                        let slack = i64::from(st.current_healthy) - i64::from(st.desired_healthy);
                        m.fetch_min(slack, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (stop, min, h)
    }
}

async fn status(client: &Client) -> Option<Value> {
    client.json(Method::GET, "/v1/status", None).await.ok()
}

use common::run_events as events;

fn step_of(e: &Value, kind: &str) -> Option<(String, String)> {
    let s = e["event"].get(kind)?;
    let step = match &s["step"] {
        Value::String(n) => n.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    Some((s["node"].as_str()?.to_string(), step))
}

/// The most nodes ever between the start of their cordon and the success of their uncordon.
fn most_nodes_down(evs: &[Value]) -> usize {
    let mut down = std::collections::BTreeSet::new();
    let mut most = 0;
    for e in evs {
        if let Some((node, step)) = step_of(e, "StepStarted")
            && step == "Cordon"
        {
            down.insert(node);
        }
        if let Some((node, step)) = step_of(e, "StepSucceeded")
            && step == "Uncordon"
        {
            down.remove(&node);
        }
        most = most.max(down.len());
    }
    most
}

/// Waits (up to `secs`) until `run` is the active run and has completed; a halt fails.
async fn until_run_completed(client: &Client, run: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(client).await.expect("status");
        if st["active"]["run"] == run && st["active"]["phase"] == "completed" {
            return;
        }
        assert!(
            st["active"]["phase"] != "halted",
            "halted: {:#}",
            st["active"]
        );
        assert!(
            Instant::now() < deadline,
            "{run} not done: {:#}",
            st["active"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stub calls that change a node (package tools, kubeadm, systemctl), completed ones.
fn changing_calls(lab: &Lab, node: &str) -> Vec<String> {
    lab.calls(node)
        .expect("calls")
        .iter()
        .filter(|c| c.exit != -1)
        .filter(|c| ["apt-get", "apt-mark", "kubeadm", "systemctl"].contains(&c.tool.as_str()))
        // Reads: kubeadm's version, the preflight's look at the holds.
        .filter(|c| c.args.first().map(String::as_str) != Some("version"))
        .filter(|c| {
            !(c.tool == "apt-mark" && c.args.first().map(String::as_str) == Some("showhold"))
        })
        .map(|c| {
            let line = c.line();
            if c.exit == 0 {
                line
            } else {
                format!("{line} (exit {})", c.exit)
            }
        })
        .collect()
}

fn install(pkgs: &[&str], v: &str) -> Vec<String> {
    let names = pkgs.join(" ");
    let specs: Vec<String> = pkgs.iter().map(|p| format!("{p}={v}-1.1")).collect();
    vec![
        format!("apt-mark unhold {names}"),
        "apt-get update -q".into(),
        format!("apt-get install -y {}", specs.join(" ")),
        format!("apt-mark hold {names}"),
    ]
}

fn expected_control_plane() -> Vec<String> {
    let mut want = vec![];
    for v in ["1.34.6", "1.35.3"] {
        want.push("apt-get update -q".to_string()); // preflight
        want.extend(install(&["kubeadm"], v));
        want.push(format!("kubeadm upgrade plan v{v}"));
        want.push(format!("kubeadm upgrade apply v{v} -y"));
        want.extend(install(&["kubelet", "kubectl"], v));
        want.push("systemctl daemon-reload".into());
        want.push("systemctl restart kubelet".into());
    }
    want
}

fn expected_worker() -> Vec<String> {
    let mut want = vec!["apt-get update -q".to_string()];
    for v in ["1.34.6", "1.35.3"] {
        want.extend(install(&["kubeadm"], v));
        want.push("kubeadm upgrade node".into());
        want.extend(install(&["kubelet", "kubectl"], v));
    }
    want.push("systemctl daemon-reload".into());
    want.push("systemctl restart kubelet".into());
    want
}

fn masters_gone(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("pgrep")
            .args(["-af", &dir.display().to_string()])
            .output()
            .expect("pgrep");
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("ssh"))
            .map(str::to_string)
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "SSH masters left: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn snapshots_restore(data: &Path) -> usize {
    let dir = data.join("etcd-snapshots/cp-1");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("snapshot copies").flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "db") {
            // A snapshot holds every Secret of the cluster: its copy is private.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
            let dmode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
            assert_eq!(dmode, 0o700, "{} is {dmode:o}", dir.display());
            let target = tempfile::tempdir().expect("tmp");
            let out = Command::new("etcdctl")
                .args(["snapshot", "restore"])
                .arg(&p)
                .arg("--data-dir")
                .arg(target.path().join("r"))
                .env("ETCDCTL_API", "3")
                .output()
                .expect("etcdctl");
            assert!(
                out.status.success(),
                "{} restores: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    n
}

/// What both lab tests check once the run completed; returns the run's records.
async fn after_the_run(s: &Setup, min_slack: &AtomicI64, client: &Client, run: &str) -> Vec<Value> {
    final_cluster_checks(s);
    assert!(
        min_slack.load(Ordering::Relaxed) >= 0,
        "a budget was violated"
    );
    let evs = events(client, run).await;
    assert_eq!(most_nodes_down(&evs), 1, "never two nodes down at once");
    let got = common::stream::published(&s.nats.url(), "lab", run, evs.len()).await;
    common::stream::assert_exactly_once_in_order(&got, run, evs.len());
    evs
}

/// Stops the daemon, checks its SSH masters are gone, and leaves nothing of the lab.
fn tear_down(mut s: Setup, mut daemon: common::Daemon) {
    let id = s.lab.id.clone();
    daemon.kill_now();
    masters_gone(&s.control_dir());
    drop(s.nats);
    drop(s.sim);
    s.lab.teardown();
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

fn final_cluster_checks(s: &Setup) {
    let w = s.sim.sim.world();
    for n in NODES {
        let node = &w.nodes[n];
        assert_eq!(node.kubelet.to_string(), "v1.35.3", "{n}");
        assert!(!node.unschedulable, "{n} left cordoned");
        assert!(node.ready, "{n} Ready");
    }
    let cp = w.nodes["cp-1"].control_plane.clone().expect("cp");
    assert_eq!(cp.apiserver.to_string(), "v1.35.3");
    for n in NODES {
        assert_eq!(
            s.lab.packages(n).expect("state")["kubelet"],
            "1.35.3-1.1",
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_cluster_upgrades_over_ssh_with_snapshots_and_jetstream() {
    let _serial = SERIAL.lock().await;
    let s = Setup::new(600);
    let (stop, min_slack, watcher) = s.watch_budgets();
    let (daemon, client) = s.daemon().await;
    let v = common::start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let st = status(&client).await.expect("status");
        let phase = st["active"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if phase == "completed" {
            break;
        }
        assert!(phase != "halted", "halted: {:#}", st["active"]);
        assert!(
            Instant::now() < deadline,
            "not done in time: {:#}",
            st["active"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();

    // The exact kubeadm/apt/systemctl sequence on every node.
    assert_eq!(changing_calls(&s.lab, "cp-1"), expected_control_plane());
    for w in ["w-1", "w-2", "w-3"] {
        assert_eq!(changing_calls(&s.lab, w), expected_worker(), "{w}");
    }
    let evs = after_the_run(&s, &min_slack, &client, &run).await;
    // Snapshots: one per hop, recorded with digest and revision, and they restore.
    let snaps: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("StepSucceeded"))
        .filter(|e| e["step"] == "EtcdSnapshot")
        .collect();
    assert_eq!(snaps.len(), 2);
    for sn in &snaps {
        assert_eq!(
            sn["facts"]["sha256"].as_str().map(str::len),
            Some(64),
            "{sn}"
        );
        assert!(sn["facts"]["revision"].as_str().is_some(), "{sn}");
    }
    assert!(snapshots_restore(&s.data()) >= 1);
    // The control plane's checks asked the real etcd for its members' health, and cp-1's
    // own kube-apiserver over SSH on its loopback (the lab's curl stands for it), after
    // each control-plane step.
    let passed: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("CheckPassed"))
        .collect();
    let etcd: Vec<&&Value> = passed
        .iter()
        .filter(|p| p["check"] == "etcd-quorum")
        .collect();
    assert!(
        etcd.len() >= 3,
        "the baseline and after each hop: {etcd:#?}"
    );
    for g in etcd {
        assert_eq!(g["facts"]["etcd_members"], "1", "{g}");
        assert_eq!(g["facts"]["etcd_healthy"], "1", "{g}");
    }
    assert!(
        passed
            .iter()
            .any(|p| p["check"] == "apiserver-readyz" && p["facts"]["readyz/cp-1"] == "200"),
        "{passed:#?}"
    );
    let asked = s
        .lab
        .calls("cp-1")
        .expect("calls")
        .iter()
        .filter(|c| c.tool == "curl")
        .count();
    assert!(asked >= 3, "cp-1's /readyz asked on the node: {asked}");

    // Rollback of a worker over SSH: held packages go back (apt refuses a downgrade of held
    // packages without both flags, as the stub copies), and its kubelet config with them.
    // What apt says to a downgrade of held packages without the flags the rollback passes.
    let v133 = "printf 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.33/deb/ /\\n' > /etc/apt/sources.list.d/kubernetes.list";
    for (flags, says) in [
        (
            "--allow-change-held-packages",
            "E: Packages were downgraded and -y was used without --allow-downgrades.",
        ),
        (
            "--allow-downgrades",
            "E: Held packages were changed and -y was used without --allow-change-held-packages.",
        ),
    ] {
        let out = s
            .lab
            .ssh(
                "w-1",
                &format!("{v133}; apt-get install -y {flags} kubelet=1.33.5-1.1"),
            )
            .expect("ssh");
        assert_eq!(out.status.code(), Some(100), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{out:?}"
        );
    }
    let before = changing_calls(&s.lab, "w-1").len();
    let r = client
        .json(
            Method::POST,
            "/v1/rollbacks",
            Some(&serde_json::json!({ "nodes": ["w-1"] })),
        )
        .await
        .expect("rollback");
    let rollback = r["run"].as_str().expect("rollback run").to_string();
    until_run_completed(&client, &rollback, 120).await;
    let all = ["kubeadm", "kubelet", "kubectl"].join(" ");
    assert_eq!(
        changing_calls(&s.lab, "w-1")[before..].to_vec(),
        vec![
            "apt-get update -q".to_string(), // preflight
            format!("apt-mark unhold {all}"),
            "apt-get update -q".into(),
            "apt-get install -y --allow-downgrades --allow-change-held-packages kubeadm=1.33.5-1.1 kubelet=1.33.5-1.1 kubectl=1.33.5-1.1".into(),
            format!("apt-mark hold {all}"),
            "systemctl daemon-reload".into(),
            "systemctl restart kubelet".into(),
        ]
    );
    let pkgs = s.lab.packages("w-1").expect("packages");
    for p in ["kubeadm", "kubelet", "kubectl"] {
        assert_eq!(pkgs.get(p).map(String::as_str), Some("1.33.5-1.1"), "{p}");
    }
    let down = events(&client, &rollback)
        .await
        .into_iter()
        .filter_map(|e| e["event"].get("StepSucceeded").cloned())
        .find(|s| s["step"].get("DowngradePackages").is_some())
        .expect("downgraded");
    assert_eq!(
        down["facts"]["kubelet_config_restored"], "/var/lib/upgraded/kubelet-config/v1.33.5.yaml",
        "{down}"
    );
    let config = s
        .lab
        .ssh_ok("w-1", "cat /var/lib/kubelet/config.yaml")
        .expect("config");
    assert_eq!(config, upgraded_tests::lab::LAB_KUBELET_CONFIG);

    // The control plane one minor back through kubeadm, which refuses more and keeps etcd.
    let out = s
        .lab
        .ssh("cp-1", "kubeadm upgrade apply v1.33.5 -y")
        .expect("ssh");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is too low; kubeadm can downgrade only 1 minor version at a time"),
        "{out:?}"
    );
    let r = client
        .json(
            Method::POST,
            "/v1/rollbacks",
            Some(&serde_json::json!({ "to": "v1.34.6", "run": run })),
        )
        .await
        .expect("rollback --to");
    let to = r["run"].as_str().expect("rollback run").to_string();
    // The real snapshot taken before the hop past the target is named in the plan, and kept.
    let etcd = r["etcd"].as_str().unwrap_or_default();
    assert!(
        etcd.contains("The snapshot taken before the upgrade past v1.34.6")
            && etcd.contains("revision "),
        "{etcd}"
    );
    until_run_completed(&client, &to, 180).await;
    for (n, want) in [
        ("cp-1", "1.34.6-1.1"),
        ("w-2", "1.34.6-1.1"),
        ("w-3", "1.34.6-1.1"),
        ("w-1", "1.33.5-1.1"),
    ] {
        assert_eq!(
            s.lab
                .packages(n)
                .expect("packages")
                .get("kubelet")
                .map(String::as_str),
            Some(want),
            "{n}"
        );
    }
    let cp_calls = changing_calls(&s.lab, "cp-1");
    // The last apply of v1.34.6 (the forward run applied it too, on its way up).
    let apply = cp_calls
        .iter()
        .rposition(|c| c == "kubeadm upgrade apply v1.34.6 -y")
        .expect("kubeadm downgrade");
    assert!(
        cp_calls[..apply].iter().any(|c| c
            == "apt-get install -y --allow-downgrades --allow-change-held-packages kubeadm=1.34.6-1.1"),
        "{cp_calls:#?}"
    );
    let kept = events(&client, &to)
        .await
        .into_iter()
        .filter_map(|e| e["event"].get("StepSucceeded").cloned())
        .find(|s| s["step"].get("KubeadmDowngrade").is_some())
        .expect("kubeadm downgrade recorded");
    assert!(
        kept["facts"]["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("Won't downgrade etcd")),
        "{kept}"
    );
    assert_eq!(
        s.sim
            .sim
            .world()
            .apiserver_version()
            .map(|v| v.to_string())
            .as_deref(),
        Some("v1.34.6")
    );
    tear_down(s, daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_upgrade_survives_kill_9_at_random_moments_and_a_nats_restart() {
    let _serial = SERIAL.lock().await;
    let mut s = Setup::new(40);
    let (stop, min_slack, watcher) = s.watch_budgets();
    let (mut daemon, mut client) = s.daemon().await;
    let v = common::start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run id").to_string();
    let mut kills = 0;
    let mut rng = rand::rng();
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let wait = Duration::from_millis(rng.random_range(100..1500));
        tokio::time::sleep(wait).await;
        let st = status(&client).await;
        let phase = st
            .as_ref()
            .and_then(|v| v["active"]["phase"].as_str())
            .unwrap_or_default()
            .to_string();
        if phase == "completed" {
            break;
        }
        assert!(phase != "halted", "halted: {st:#?}");
        assert!(
            Instant::now() < deadline,
            "not done in time after {kills} kills: {st:#?}"
        );
        daemon.kill_now();
        kills += 1;
        if kills == 6 {
            s.nats.stop();
        }
        if kills == 10 {
            s.nats.resume().expect("NATS back");
        }
        (daemon, client) = s.daemon().await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    assert!(kills >= 20, "only {kills} kills before the run completed");

    // No step that must not run twice ran twice: one install per kubelet version, one
    // kubelet restart per version the node ran.
    for n in NODES {
        let calls = changing_calls(&s.lab, n);
        let mut installs: BTreeMap<String, usize> = BTreeMap::new();
        for c in calls
            .iter()
            .filter(|c| c.starts_with("apt-get install -y kubelet="))
        {
            *installs.entry(c.clone()).or_default() += 1;
        }
        assert!(installs.values().all(|&k| k == 1), "{n}: {installs:?}");
        assert_eq!(installs.len(), 2, "{n}: {installs:?}");
        let restarts = calls
            .iter()
            .filter(|c| *c == "systemctl restart kubelet")
            .count();
        assert_eq!(restarts, if n == "cp-1" { 2 } else { 1 }, "{n}: {calls:#?}");
    }
    let evs = after_the_run(&s, &min_slack, &client, &run).await;
    eprintln!("kill -9 ×{kills}, {} events, all published once", evs.len());
    tear_down(s, daemon);
}

/// `etcdctl` on a lab node against its own member (the lab's etcd is plain http).
fn etcdctl(s: &Setup, node: &str, args: &str) -> String {
    s.lab
        .ssh_ok(
            node,
            &format!("ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 {args}"),
        )
        .unwrap_or_else(|e| panic!("etcdctl {args} on {node}: {e}"))
}

/// The cluster IDs `endpoint status --cluster` reports, deduplicated.
fn cluster_ids(s: &Setup, node: &str) -> Vec<u64> {
    let status: Value =
        serde_json::from_str(&etcdctl(s, node, "endpoint status --cluster -w json"))
            .expect("endpoint status JSON");
    let mut ids: Vec<u64> = status
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["Status"]["header"]["cluster_id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

const HA_NODES: [&str; 5] = ["cp-1", "cp-2", "cp-3", "w-1", "w-2"];

/// etcd's disaster recovery on a real 3-member cluster across three node namespaces: after an
/// upgrade to 1.34 and a write made since, `rollback --to v1.33.5 --etcd restore-snapshot
/// --confirm-data-loss` takes the control plane back and restores every member from the
/// snapshot taken before the hop: its keys are back, the later write is gone, every member is
/// healthy, and all report one (new) cluster ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_etcd_restore_snapshot_brings_back_the_snapshot_on_every_member() {
    let _serial = SERIAL.lock().await;
    let s = Setup::of("lab-ha", &HA_NODES, 600);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .lab
        .ssh(
            "cp-1",
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 endpoint health --cluster",
        )
        .map_or(true, |o| !o.status.success())
    {
        assert!(
            Instant::now() < deadline,
            "the lab's etcd cluster never became healthy"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        etcdctl(&s, "cp-2", "member list -w simple").lines().count(),
        3
    );
    let before = cluster_ids(&s, "cp-1");
    assert_eq!(before.len(), 1, "{before:?}");
    etcdctl(&s, "cp-1", "put /lab/before kept");

    let (daemon, client) = s.daemon().await;
    let v = common::start_run(&client, "v1.34.6").await.expect("start");
    let run = v["run"].as_str().expect("run id").to_string();
    until_run_completed(&client, &run, 240).await;
    // The snapshot recorded every member, by name and peer URL.
    let snap = events(&client, &run)
        .await
        .into_iter()
        .filter_map(|e| e["event"].get("StepSucceeded").cloned())
        .find(|e| e["step"] == "EtcdSnapshot")
        .expect("snapshot");
    let members = snap["facts"]["members"].as_str().unwrap_or_default();
    for n in ["cp-1", "cp-2", "cp-3"] {
        let addr = s.lab.node(n).expect("node").addr;
        assert!(
            members.contains(&format!("{n}=http://{addr}:2380")),
            "{members}"
        );
    }
    // A write after the snapshot: the restore loses it.
    etcdctl(&s, "cp-2", "put /lab/after lost");

    let ask = |extra: Value| {
        let mut body =
            serde_json::json!({ "to": "v1.33.5", "run": run, "etcd": "restore-snapshot" });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    // Never without the operator's confirmation; the plan shows it without one.
    let refused = client
        .json(
            Method::POST,
            "/v1/rollbacks",
            Some(&ask(serde_json::json!({}))),
        )
        .await
        .expect_err("unconfirmed");
    assert!(
        refused.to_string().contains("--confirm-data-loss"),
        "{refused}"
    );
    let shown = client
        .json(
            Method::POST,
            "/v1/rollbacks",
            Some(&ask(serde_json::json!({ "planOnly": true }))),
        )
        .await
        .expect("plan");
    assert!(shown["run"].is_null(), "{shown}");
    assert!(
        shown["etcd"]
            .as_str()
            .is_some_and(|e| e.contains("EVERY WRITE MADE SINCE IS LOST") && e.contains(" ago")),
        "{shown}"
    );
    let r = client
        .json(
            Method::POST,
            "/v1/rollbacks",
            Some(&ask(serde_json::json!({ "confirmDataLoss": true }))),
        )
        .await
        .expect("rollback --etcd restore-snapshot");
    let rollback = r["run"].as_str().expect("rollback run").to_string();
    until_run_completed(&client, &rollback, 300).await;

    // Every member answers with the snapshot's data, healthy, in one new cluster.
    for n in ["cp-1", "cp-2", "cp-3"] {
        assert_eq!(
            etcdctl(&s, n, "get /lab/before --print-value-only").trim(),
            "kept",
            "{n}"
        );
        assert_eq!(
            etcdctl(&s, n, "get /lab/after --print-value-only").trim(),
            "",
            "{n}"
        );
        let health = etcdctl(&s, n, "endpoint health --cluster -w json");
        assert_eq!(
            health.matches("\"health\":true").count(),
            3,
            "{n}: {health}"
        );
        let ids = cluster_ids(&s, n);
        assert_eq!(ids.len(), 1, "{n}: {ids:?}");
        assert_ne!(ids, before, "{n}: a restore makes a new cluster");
        // Every static pod back in place, the old data kept beside the new.
        let ls = s
            .lab
            .ssh_ok(
                n,
                "ls /etc/kubernetes/manifests; ls /etc/kubernetes/upgraded-parked; ls -d /var/lib/etcd.before-*",
            )
            .expect("ls");
        for c in [
            "etcd.yaml",
            "kube-apiserver.yaml",
            "kube-controller-manager.yaml",
            "kube-scheduler.yaml",
        ] {
            assert!(ls.contains(c), "{n}: {ls}");
        }
        assert!(
            ls.contains("/var/lib/etcd.before-upgraded-restore-"),
            "{n}: {ls}"
        );
        // The snapshot the daemon pushed is private.
        let mode = s
            .lab
            .ssh_ok(n, "stat -c %a /var/lib/upgraded/etcd/restore-*.db")
            .expect("stat");
        assert_eq!(mode.trim(), "600", "{n}");
    }
    // The stages in order: every apiserver stopped before any member was restored, every
    // member restored before any started.
    let stages: Vec<String> = events(&client, &rollback)
        .await
        .into_iter()
        .filter_map(|e| e["event"].get("StepSucceeded").cloned())
        .filter_map(|e| {
            e["step"].get("EtcdRestore").map(|st| {
                st.as_str()
                    .map(String::from)
                    .or_else(|| st.as_object().and_then(|o| o.keys().next().cloned()))
                    .unwrap_or_default()
            })
        })
        .collect();
    let mut sorted = stages.clone();
    let rank = |s: &String| {
        ["StopApiserver", "Restore", "StartEtcd", "StartControlPlane"]
            .iter()
            .position(|x| x == s)
    };
    sorted.sort_by_key(rank);
    assert_eq!(stages, sorted);
    assert_eq!(stages.len(), 12, "{stages:?}");
    assert_eq!(
        s.sim
            .sim
            .world()
            .apiserver_version()
            .map(|v| v.to_string())
            .as_deref(),
        Some("v1.33.5")
    );
    tear_down(s, daemon);
}
