//! `upgradectl sim serve`: the sandbox users point kubectl at to rehearse drains; and the
//! real binaries over the sim's real HTTP: `upgradectl` drives `upgraded`, which upgrades
//! the sim through its kubeconfig and node agents (what the in-process harness cannot show:
//! sockets, the kubeconfig, the CLI's flags and output, the daemon's own HTTP client).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sim_serve_writes_a_kubeconfig_that_kubectl_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(upgraded_tests::binary("upgradectl"))
        .args(["sim", "serve", "--scenario", "lab", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("upgradectl runs");
    let start = Instant::now();
    while !kubeconfig.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no kubeconfig written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("/usr/bin/kubectl")
        .args(["get", "nodes", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", dir.path().join("cache"))
        .env("HOME", dir.path())
        .output()
        .expect("kubectl runs");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    assert_eq!(names, "node/cp-1\nnode/w-1\nnode/w-2\nnode/w-3\n");

    let bad = Command::new(upgraded_tests::binary("upgradectl"))
        .args(["sim", "serve", "--scenario", "nope", "--kubeconfig"])
        .arg(dir.path().join("k2"))
        .output()
        .expect("upgradectl runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scenario \"nope\""));
}

/// `upgradectl` with the daemon's socket; its output, failing the test when it fails.
fn ctl(socket: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(upgraded_tests::binary("upgradectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("upgradectl runs");
    assert!(
        out.status.success(),
        "upgradectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `upgradectl watch`, which returns when the run is over (one view per change, not a
/// terminal); `what` took over 240 s fails.
async fn watch_to_the_end(socket: &std::path::Path, what: &str) {
    let mut watch = Command::new(upgraded_tests::binary("upgradectl"))
        .arg("--socket")
        .arg(socket)
        .args(["watch", "--interval-ms", "200"])
        .stdout(Stdio::null())
        .spawn()
        .expect("watch");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(status) = watch.try_wait().expect("watch") {
            assert!(status.success(), "watch failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} took over 240 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgradectl_drives_the_real_daemon_over_the_sims_http_and_the_audit_trail_names_it() {
    use upgraded_sim::{Clock, SimServer, scenario};
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path();
    let world = scenario::build("lab", Clock::real(600.0), 7).expect("lab");
    let sim = SimServer::start(world, ([127, 0, 0, 1], 0).into()).expect("sim");
    common::sim_kubeconfig_and_policy(base, &sim.url(), "1m");
    let socket = base.join("api.sock");
    let mut args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        base.join("data").into(),
        "--socket".into(),
        socket.clone().into(),
        "--time-scale".into(),
        "600".into(),
    ];
    args.extend(common::sim_daemon_args(base, &sim.url()));
    let (mut daemon, _client) = common::spawn_upgraded(&socket, &args, "warn").await;

    let socket2 = socket.clone();
    let started = tokio::task::spawn_blocking(move || ctl(&socket2, &["start", "--to", "v1.35.3"]))
        .await
        .expect("start");
    assert!(started.contains("started run "), "{started}");
    // `watch` returns when the run is over (not a terminal: one view per change).
    watch_to_the_end(&socket, "the lab upgrade").await;
    let socket2 = socket.clone();
    let status = tokio::task::spawn_blocking(move || ctl(&socket2, &["status"]))
        .await
        .expect("status");
    assert!(status.contains("completed  target v1.35.3"), "{status}");
    let socket2 = socket.clone();
    let runs = tokio::task::spawn_blocking(move || ctl(&socket2, &["runs"]))
        .await
        .expect("runs");
    assert!(
        runs.starts_with("RUN ") && runs.contains(" upgrade ") && runs.contains(" completed "),
        "{runs}"
    );
    for n in sim.sim.world().nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.35.3", "{}", n.name);
    }
    // `upgradectl rollback`: the plan first, then the rollback, watched to its end.
    let socket2 = socket.clone();
    let plan = tokio::task::spawn_blocking(move || {
        ctl(&socket2, &["rollback", "--node", "w-2", "--plan"])
    })
    .await
    .expect("rollback --plan");
    assert!(
        plan.contains("1. w-2: kubelet and kubectl v1.35.3 → v1.33.5")
            && plan.contains("(plan only: nothing recorded)"),
        "{plan}"
    );
    let socket2 = socket.clone();
    let started =
        tokio::task::spawn_blocking(move || ctl(&socket2, &["rollback", "--node", "w-2"]))
            .await
            .expect("rollback");
    assert!(started.contains("started rollback run "), "{started}");
    watch_to_the_end(&socket, "the rollback").await;
    {
        let w = sim.sim.world();
        assert_eq!(w.nodes["w-2"].kubelet.to_string(), "v1.33.5");
        assert!(!w.nodes["w-2"].unschedulable);
        assert_eq!(w.nodes["w-1"].kubelet.to_string(), "v1.35.3");
    }
    // An export for the incident ticket: checked, replayed offline the same as through the
    // daemon, and refused with the damage's offset once a byte in its middle is flipped.
    let export = base.join("incident.export");
    let ex = export.display().to_string();
    let forward = runs
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("the upgrade's run id")
        .to_string();
    let (socket2, ex2, fwd) = (socket.clone(), ex.clone(), forward.clone());
    let (wrote, verified, offline, online) = tokio::task::spawn_blocking(move || {
        (
            ctl(&socket2, &["export", "-o", &ex2]),
            ctl(&socket2, &["export", "--verify", &ex2]),
            ctl(
                &socket2,
                &[
                    "replay", "--file", &ex2, "--run", &fwd, "--at", "seq 40", "-o", "json",
                ],
            ),
            ctl(
                &socket2,
                &["replay", "--run", &fwd, "--at", "seq 40", "-o", "json"],
            ),
        )
    })
    .await
    .expect("export and replay");
    assert!(wrote.contains("of 2 run(s)"), "{wrote}");
    // The history reads the same from the export as from the daemon.
    let (socket2, ex2) = (socket.clone(), ex.clone());
    let (history, offline_history) = tokio::task::spawn_blocking(move || {
        (
            ctl(&socket2, &["runs"]),
            ctl(&socket2, &["runs", "--file", &ex2]),
        )
    })
    .await
    .expect("runs");
    assert_eq!(history, offline_history);
    assert!(
        history.contains("node rollback of ") && history.contains("(nodes rolled back)"),
        "{history}"
    );
    assert!(verified.contains("intact"), "{verified}");
    assert_eq!(offline, online);
    let then: serde_json::Value = serde_json::from_str(&offline).expect("replay JSON");
    assert_eq!(then["seq"], 40, "{then}");
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(&export).expect("export");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut bytes = std::fs::read(&export).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&export, &bytes).expect("damage");
    let out = Command::new(upgraded_tests::binary("upgradectl"))
        .args(["export", "--verify", &ex])
        .output()
        .expect("verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("damaged at byte "),
        "{err}"
    );
    let offset: usize = err
        .split("damaged at byte ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("an offset");
    assert!(
        offset <= mid && bytes[offset..mid].iter().all(|b| *b != b'\n'),
        "{err}"
    );
    // Every change the daemon made is named in the apiserver's audit trail.
    let agents = sim.sim.user_agents();
    assert!(
        !agents.is_empty()
            && agents
                .keys()
                .all(|a| a == upgraded_daemon::kube::USER_AGENT),
        "changing requests by User-Agent: {agents:?}"
    );
    daemon.kill_now();

    // The stopped daemon's data dir, read offline: the same answers, and not a byte of it
    // changed.
    let data = base.join("data");
    let digest = |dir: &std::path::Path| -> Vec<(String, u64, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let bytes = std::fs::read(&p).expect("read");
                    files.push((p.display().to_string(), bytes.len() as u64, bytes));
                }
            }
        }
        files.sort();
        files
    };
    let before = digest(&data);
    let d = data.display().to_string();
    let (offline_runs, offline_at, timeline) = tokio::task::spawn_blocking(move || {
        let sock = std::path::Path::new("/nonexistent/api.sock");
        (
            ctl(sock, &["runs", "--data-dir", &d]),
            ctl(
                sock,
                &[
                    "replay",
                    "--data-dir",
                    &d,
                    "--run",
                    &forward,
                    "--at",
                    "seq 40",
                    "-o",
                    "json",
                ],
            ),
            ctl(sock, &["timeline", "--data-dir", &d, "--width", "100"]),
        )
    })
    .await
    .expect("offline verbs");
    assert_eq!(offline_runs, history);
    assert_eq!(offline_at, online);
    assert!(
        timeline.contains("w-2") && timeline.contains("legend:"),
        "{timeline}"
    );
    assert!(digest(&data) == before, "the data dir changed");
}
