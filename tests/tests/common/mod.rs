//! Helpers shared by the end-to-end tests: locating the built binaries, running the daemon.
// Each test binary uses a part of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use upgraded_tests::binary;

pub struct DaemonOpts<'a> {
    pub base: &'a Path,
    pub extra: &'a [&'a str],
}

/// A daemon process that is SIGKILLed when dropped, so a failing test leaves none behind.
pub struct Daemon(Child);

impl Daemon {
    pub fn from_child(child: Child) -> Daemon {
        Daemon(child)
    }

    /// `kill -9` and reap.
    pub fn kill_now(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A number from the environment (`KILL_ITERATIONS`, …), or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A replayable seed: `name` from the environment, or a random one (print it).
pub fn env_seed(name: &str) -> u64 {
    env_number(name, rand::random())
}

/// `upgraded` on a fake world: its data dir, socket and world, quiet output but errors.
pub fn fake_world_daemon(data: &Path, socket: &Path, world: &Path) -> Command {
    let mut c = Command::new(binary("upgraded"));
    c.arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .arg("--fake-world")
        .arg(world)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

/// `upgraded` on a quick fake world in `dir` (one control plane and `workers` workers, 5 ms
/// per node command, its clock 100 times faster) with [`FAKE_RUN_POLICY`], the socket at
/// `dir/api.sock`; more arguments and the output are the caller's.
pub fn quick_fake_world(dir: &Path, workers: usize) -> Command {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, FAKE_RUN_POLICY).expect("policy");
    quick_fake_world_with(dir, workers, &policy)
}

/// [`quick_fake_world`] with the policy file `policy`.
pub fn quick_fake_world_with(dir: &Path, workers: usize, policy: &Path) -> Command {
    let mut c = fake_world_daemon(&dir.join("data"), &dir.join("api.sock"), &dir.join("world"));
    c.args(["--fake-control-planes", "1", "--fake-workers"])
        .arg(workers.to_string())
        .args(["--fake-delay-ms", "5", "--time-scale", "100", "--policy"])
        .arg(policy);
    c
}

/// A fake-world run: one canary, then two workers at a time; short soaks and waits, fast
/// retries (the kill and log damage tests).
pub const FAKE_RUN_POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 2, canaries: 1}
canarySoak: 30s
waitBetweenBatches: 10s
retries: {backoff: 1s}
";

pub fn spawn_daemon(o: &DaemonOpts<'_>) -> Daemon {
    Daemon(
        fake_world_daemon(
            &o.base.join("data"),
            &o.base.join("api.sock"),
            &o.base.join("world"),
        )
        .args(o.extra)
        .spawn()
        .expect("spawn upgraded"),
    )
}

/// For `upgraded` on the sim over its HTTP API: `base/kubeconfig` (the sim at `sim_url`)
/// and `base/policy.yaml` (one node of a generation at a time, no canary, `between` batches,
/// quick retries).
pub fn sim_kubeconfig_and_policy(base: &Path, sim_url: &str, between: &str) {
    std::fs::write(base.join("kubeconfig"), upgraded_sim::kubeconfig(sim_url)).expect("kubeconfig");
    std::fs::write(
        base.join("policy.yaml"),
        format!(
            "apiVersion: upgraded.dev/v1alpha1\nkind: UpgradePolicy\ngenerations: \
             {{maxUnavailable: 1, canaries: 0}}\nwaitBetweenBatches: {between}\nretries: \
             {{backoff: 1s, maxBackoff: 5s}}\n"
        ),
    )
    .expect("policy");
}

/// The arguments that point a real `upgraded` at the sim behind `sim_url`, with the
/// kubeconfig and policy `sim_kubeconfig_and_policy` wrote in `base`.
pub fn sim_daemon_args(base: &Path, sim_url: &str) -> Vec<std::ffi::OsString> {
    vec![
        "--kubeconfig".into(),
        base.join("kubeconfig").into(),
        "--policy".into(),
        base.join("policy.yaml").into(),
        "--sim-agents".into(),
        sim_url.into(),
    ]
}

/// Waits until the daemon answers on its socket.
pub async fn wait_ready(client: &upgraded_ctl::Client, daemon: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.json(hyper_get(), "/v1/status", None).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("upgraded exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "upgraded did not answer within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn hyper_get() -> hyper::Method {
    hyper::Method::GET
}

/// `POST /v1/runs` for `target`.
pub async fn start_run(
    client: &upgraded_ctl::Client,
    target: &str,
) -> Result<serde_json::Value, upgraded_ctl::ClientError> {
    client
        .json(
            hyper::Method::POST,
            "/v1/runs",
            Some(&serde_json::json!({ "target": target })),
        )
        .await
}

/// The active run's status (`/v1/status`'s `active`).
pub async fn active(client: &upgraded_ctl::Client) -> serde_json::Value {
    client
        .json(hyper_get(), "/v1/status", None)
        .await
        .expect("status")["active"]
        .clone()
}

/// `GET /metrics` on `addr` (the daemon's `--metrics-address`), off the runtime's threads.
pub async fn scrape_metrics(addr: &str) -> String {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").expect("request");
        let mut t = String::new();
        s.read_to_string(&mut t).expect("read");
        t
    })
    .await
    .expect("join")
}

/// Waits (up to 90 s) until the active run has completed.
pub async fn wait_completed(client: &upgraded_ctl::Client) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while active(client).await["phase"] != "completed" {
        assert!(Instant::now() < deadline, "the run did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of a run, as JSON.
pub async fn run_events(client: &upgraded_ctl::Client, run: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    client
        .lines(&format!("/v1/runs/{run}/events"), |l| {
            out.push(serde_json::from_str(l).expect("JSON line"));
            true
        })
        .await
        .expect("events");
    out
}

/// Starts `upgraded` with `args` (which must include `--socket <socket>`), output quiet except
/// errors, and waits until it answers.
pub async fn spawn_upgraded(
    socket: &Path,
    args: &[std::ffi::OsString],
    rust_log: &str,
) -> (Daemon, upgraded_ctl::Client) {
    let child = Command::new(binary("upgraded"))
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn upgraded");
    let mut daemon = Daemon(child);
    let client = upgraded_ctl::Client::new(socket);
    wait_ready(&client, &mut daemon).await;
    (daemon, client)
}
pub mod receiver;
pub mod stream;
