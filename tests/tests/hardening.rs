//! What a careless or hostile operator tries against the real binaries: a second daemon on a
//! live socket, a socket path inside the data dir, unknown API fields, oversized reasons,
//! SIGTERM, a daemon that never answers, a closed pipe; and that the files holding cluster
//! data are private and operators are recorded by the uid the kernel reports.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use upgraded_ctl::{Client, ClientError};

use common::{DaemonOpts, active, binary, run_events, spawn_daemon, start_run, wait_ready};

const SLOW: &[&str] = &[
    "--fake-control-planes",
    "1",
    "--fake-workers",
    "2",
    "--fake-delay-ms",
    "200",
];

/// A daemon on a slow fake world under `base` (data, world and socket inside), answering.
async fn slow_fake_daemon(base: &Path) -> (common::Daemon, Client) {
    let opts = DaemonOpts { base, extra: SLOW };
    let client = Client::new(&base.join("api.sock"));
    let mut daemon = spawn_daemon(&opts);
    wait_ready(&client, &mut daemon).await;
    (daemon, client)
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("meta");
        if meta.is_dir() {
            assert_private(&entry.path());
        } else {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", entry.path().display());
        }
    }
}

async fn refused(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    match client.json(method, path, body).await {
        Err(ClientError::Refused { status, message }) => (status, message),
        other => panic!("{path}: expected a JSON refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_does_not_know_and_records_who_acted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A data dir someone made readable by all: the daemon makes it private.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (mut daemon, client) = slow_fake_daemon(tmp.path()).await;

    // snake_case `dry_run` is not `dryRun`: refused, and nothing started.
    let (status, msg) = refused(
        &client,
        Method::POST,
        "/v1/runs",
        Some(&json!({"target": "v1.35.3", "dry_run": true})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(msg.contains("unknown field `dry_run`"), "{msg}");
    let runs = client
        .json(Method::GET, "/v1/runs", None)
        .await
        .expect("runs");
    assert_eq!(runs, json!([]), "a refused request started nothing");
    let (status, _) = refused(&client, Method::GET, "/v1/nope", None).await;
    assert_eq!(status, 404);
    let (status, _) = refused(&client, Method::DELETE, "/v1/runs", None).await;
    assert_eq!(status, 405);
    let (status, msg) = refused(&client, Method::GET, "/v1/runs/x/events?folow=true", None).await;
    assert_eq!(status, 400, "{msg}");
    let (status, msg) = refused(&client, Method::GET, "/v1/runs/%FF/events", None).await;
    assert_eq!(status, 400, "{msg}");

    // A real run; a pause with an oversized reason is refused, a plain one recorded with the
    // kernel's uid and the system's name for it.
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let (status, msg) = refused(
        &client,
        Method::POST,
        "/v1/run/pause",
        Some(&json!({"reason": "x".repeat(1_900_000 / 1000)})),
    )
    .await;
    assert_eq!(status, 400, "{msg}");
    let (status, msg) = refused(
        &client,
        Method::POST,
        "/v1/run/pause",
        Some(&json!({"reason": "line one\nrm -rf /"})),
    )
    .await;
    assert_eq!(status, 400, "{msg}");
    client
        .json(
            Method::POST,
            "/v1/run/pause",
            Some(&json!({"reason": "change freeze"})),
        )
        .await
        .expect("pause");
    let uid = rustix_uid();
    let paused: Vec<Value> = run_events(&client, &run)
        .await
        .into_iter()
        .filter_map(|r| r["event"].get("RunPaused").cloned())
        .collect();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["by"]["uid"], json!(uid));
    assert_eq!(
        paused[0]["by"]["name"],
        json!(upgraded_daemon::api::user_name(uid))
    );
    assert_eq!(active(&client).await["phase"], "paused");

    // A second daemon on the same socket, with its own data dir: it exits, saying why, and
    // the first one still answers.
    let out = common::fake_world_daemon(
        &tmp.path().join("other-data"),
        &tmp.path().join("api.sock"),
        &tmp.path().join("other-world"),
    )
    .stderr(Stdio::piped())
    .output()
    .expect("second daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another daemon is already listening"), "{err}");
    assert!(
        !tmp.path().join("other-data").join("db").exists(),
        "it touched no log"
    );
    assert_eq!(active(&client).await["phase"], "paused");

    // A socket inside the data dir would replace a file of the log: refused.
    let out = common::fake_world_daemon(
        &tmp.path().join("third"),
        &tmp.path().join("third").join("db"),
        &tmp.path().join("third-world"),
    )
    .stderr(Stdio::piped())
    .output()
    .expect("third daemon");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the data dir"));

    // Cluster data is private to the daemon's user.
    assert_private(&data);
    daemon.kill_now();
}

fn rustix_uid() -> u32 {
    // The tests run as the daemon's user; `id -u` says who that is.
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_cleanly_and_the_run_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket = tmp.path().join("api.sock");
    let spawn = || {
        common::fake_world_daemon(&tmp.path().join("data"), &socket, &tmp.path().join("world"))
            .args(SLOW)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let client = Client::new(&socket);
    let child = spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.json(Method::GET, "/v1/status", None).await.is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start_run(&client, "v1.35.3").await.expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.contains("stopping (SIGTERM)"), "{err}");
    assert!(!socket.exists(), "the socket was removed");

    // The next start resumes the run.
    let mut again = common::Daemon::from_child(spawn());
    wait_ready(&client, &mut again).await;
    let a = active(&client).await;
    assert_eq!(a["phase"], "running", "{a:#}");
    again.kill_now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgradectl_gives_up_on_a_silent_daemon_and_ends_quietly_on_a_closed_pipe() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A listener that accepts and never answers.
    let silent = tmp.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(1) {
            held.push(s);
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let started = Instant::now();
    let out = Command::new(binary("upgradectl"))
        .arg("--socket")
        .arg(&silent)
        .args(["--timeout", "1", "status"])
        .stdin(Stdio::null())
        .output()
        .expect("upgradectl");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("did not answer within 1 s"), "{err}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let bad = Command::new(binary("upgradectl"))
        .args(["--timeout", "soon", "status"])
        .output()
        .expect("upgradectl");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a number of seconds"));
    let _ = holder.join();

    // `upgradectl events | head -1` on a daemon with a run.
    let (mut daemon, client) = slow_fake_daemon(tmp.path()).await;
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let script = format!(
        "{} --socket {} events --run {run} --follow | head -1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        binary("upgradectl").display(),
        tmp.path().join("api.sock").display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{err}");
    daemon.kill_now();
}

#[test]
fn the_systemd_units_are_hardened() {
    // The single daemon's unit and the one of an instance of `upgraded --ha`.
    for name in ["upgraded.service", "upgraded-ha.service"] {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze (Debian's systemd package) is needed by this test");
        let text = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| {
                l.split(&format!("Overall exposure level for {name}: "))
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {name} in:\n{text}"));
        assert!(
            exposure <= 2.0,
            "{name}: exposure {exposure} (was 9.6 UNSAFE):\n{text}"
        );
    }
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mkdir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount (this test needs root, as CI has)");
        assert!(ok.success(), "mount tmpfs on {}", at.display());
        SmallDisk(at.to_path_buf())
    }

    /// Writes until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("fill")).expect("fill file");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_an_append_with_the_reason_and_leaves_no_trace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = SmallDisk::mount(&tmp.path().join("disk"), "8m");
    let data = tmp.path().join("disk").join("data");
    let spawn = || {
        common::Daemon::from_child(
            common::fake_world_daemon(
                &data,
                &tmp.path().join("api.sock"),
                &tmp.path().join("world"),
            )
            .args(SLOW)
            .env("RUST_LOG", "error")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
        )
    };
    let client = Client::new(&tmp.path().join("api.sock"));
    let mut daemon = spawn();
    wait_ready(&client, &mut daemon).await;
    disk.fill();
    let err = start_run(&client, "v1.35.3")
        .await
        .expect_err("no room for the log");
    let msg = err.to_string();
    assert!(
        msg.contains("event log write failed") && msg.contains("nothing of it was recorded"),
        "{msg}"
    );
    let runs = client
        .json(Method::GET, "/v1/runs", None)
        .await
        .expect("runs");
    assert_eq!(runs, json!([]), "a failed append is not shown");
    // Room again, and a restart: still nothing, and a run starts.
    std::fs::remove_file(tmp.path().join("disk").join("fill")).expect("rm fill");
    daemon.kill_now();
    let mut daemon = spawn();
    wait_ready(&client, &mut daemon).await;
    let runs = client
        .json(Method::GET, "/v1/runs", None)
        .await
        .expect("runs");
    assert_eq!(
        runs,
        json!([]),
        "nothing of the failed append became durable"
    );
    start_run(&client, "v1.35.3")
        .await
        .expect("start with room");
    daemon.kill_now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_to_the_version_the_cluster_runs_records_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut daemon, client) = slow_fake_daemon(tmp.path()).await;
    // The fake world runs v1.32.4 everywhere.
    let v = start_run(&client, "v1.32.4")
        .await
        .expect("nothing to do is no error");
    assert!(v["run"].is_null(), "{v:#}");
    let runs = client
        .json(Method::GET, "/v1/runs", None)
        .await
        .expect("runs");
    assert_eq!(runs, json!([]));
    let out = Command::new(binary("upgradectl"))
        .arg("--socket")
        .arg(tmp.path().join("api.sock"))
        .args(["start", "--to", "v1.32.4"])
        .output()
        .expect("upgradectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("nothing to do"),
        "{text}"
    );
    daemon.kill_now();
}

/// `--log-format json`: every line the daemon writes is one JSON object, and what it logs
/// while a step runs carries the run, the entry and the step as fields (its spans'), so a log
/// pipeline finds a node's story without parsing text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_names_the_run_entry_and_step_of_each_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket = tmp.path().join("api.sock");
    let log = tmp.path().join("daemon.log");
    let child = common::quick_fake_world(tmp.path(), 2)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon::from_child(child);
    let client = Client::new(&socket);
    wait_ready(&client, &mut daemon).await;
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while active(&client).await["phase"] != "completed" {
        assert!(Instant::now() < deadline, "the run did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.kill_now();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let recorded: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"] == "recorded"
                && l["fields"]["record"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("Step"))
        })
        .collect();
    // The readings of drift after each batch are named as such.
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["record"] == "DriftObserved"
                && l["span"]["name"] == "drift"
                && l["span"]["after"].is_u64()),
        "{text}"
    );
    assert!(!recorded.is_empty(), "{text}");
    for l in &recorded {
        assert_eq!(l["span"]["name"], "step", "{l}");
        assert!(
            l["span"]["entry"].is_string() && l["span"]["step"].is_string(),
            "{l}"
        );
        let spans = l["spans"].as_array().expect("spans");
        assert!(
            spans
                .iter()
                .any(|s| s["name"] == "run" && s["run"] == run.as_str()),
            "{l}"
        );
    }
    assert!(
        recorded
            .iter()
            .any(|l| l["span"]["step"] == "uncordon" && l["fields"]["record"] == "StepSucceeded"),
        "{text}"
    );
    // A mistyped format is refused by name before anything is opened.
    let out = Command::new(binary("upgraded"))
        .args(["--log-format", "yaml", "--data-dir"])
        .arg(tmp.path().join("other"))
        .output()
        .expect("upgraded runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid value 'yaml' for '--log-format"),
        "{out:?}"
    );
    assert!(!tmp.path().join("other").exists());
}
