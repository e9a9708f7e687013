//! Damage sled's own files the way disks, crashes and people do, after a real run killed at a
//! random record. After each damage the daemon must either refuse to start, naming the run
//! and the seq range (or, when sled cannot open its files at all, what the witness holds and
//! `--rebuild-log`), or open with every acknowledged record intact; and a run resumed on a
//! damaged copy must do exactly what a run resumed on the undamaged copy does.
//!
//! `LOG_DAMAGES` (default 200) sets the number of damages; `LOG_DAMAGE_SEED` replays them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use upgraded_ctl::Client;
use upgraded_daemon::fake::read_effects;

use common::{DaemonOpts, binary, spawn_daemon, start_run, wait_ready};

const DAEMON_ARGS: &[&str] = &[
    "--fake-control-planes",
    "1",
    "--fake-workers",
    "4",
    "--fake-delay-ms",
    "10",
    "--time-scale",
    "200",
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// sled's own files in a data dir (not the witness, the clock anchor or the world).
fn sled_files(data: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file() && (n == "db" || n == "conf" || n.starts_with("snap."))
        })
        .collect();
    out.sort();
    out
}

/// One damage, described for the failure message.
fn damage(data: &Path, rng: &mut StdRng) -> String {
    let files = sled_files(data);
    let db = data.join("db");
    let pick = |rng: &mut StdRng| files[rng.random_range(0..files.len())].clone();
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rewrite = |p: &Path, f: &mut dyn FnMut(&mut Vec<u8>)| {
        let mut b = std::fs::read(p).expect("read");
        f(&mut b);
        std::fs::write(p, b).expect("write");
    };
    match rng.random_range(0..8) {
        0 => {
            let n = rng.random_range(0..len(&db).max(1));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .and_then(|f| f.set_len(n))
                .expect("truncate");
            format!("db truncated to {n} bytes")
        }
        1 | 2 => {
            let p = pick(rng);
            let at = rng.random_range(0..len(&p).max(1));
            let mask: u32 = rng.random_range(1..=u32::MAX);
            rewrite(&p, &mut |b| {
                for (i, m) in mask.to_le_bytes().iter().enumerate() {
                    if let Some(x) = b.get_mut(at as usize + i) {
                        *x ^= m;
                    }
                }
            });
            format!("4 bytes flipped at offset {at} of {}", p.display())
        }
        3 => {
            let at = rng.random_range(0..len(&db).max(1));
            rewrite(&db, &mut |b| {
                let end = (at as usize + 4096).min(b.len());
                b[at as usize..end].fill(0);
            });
            format!("4 KiB zeroed at offset {at} of db")
        }
        4 => {
            rewrite(&db, &mut |b| {
                let from = b.len().saturating_sub(4096);
                b[from..].fill(0);
            });
            "the last 4 KiB of db zeroed".into()
        }
        5 => {
            let back = rng.random_range(1..=512u64).min(len(&db));
            let at = len(&db) - back;
            rewrite(&db, &mut |b| {
                if let Some(x) = b.get_mut(at as usize) {
                    *x ^= 0xa5;
                }
            });
            format!("a byte flipped {back} bytes before the end of db (its last records)")
        }
        6 => {
            let p = pick(rng);
            std::fs::remove_file(&p).expect("rm");
            format!("{} deleted", p.display())
        }
        _ => {
            let p = pick(rng);
            let n = rng.random_range(0..len(&p).max(1));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(n))
                .expect("truncate");
            format!("{} truncated to {n} bytes", p.display())
        }
    }
}

struct Checked {
    ok: bool,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// `upgraded --check-log` on a data dir, bounded in time.
fn check_log(data: &Path, extra: &[&str]) -> Checked {
    let mut child = Command::new(binary("upgraded"))
        .arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(data.with_file_name("unused.sock"))
        .arg("--check-log")
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn upgraded --check-log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("upgraded --check-log on {} hung", data.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    Checked {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// Records by (run, seq) from JSON lines.
fn by_key(lines: &str) -> BTreeMap<(String, u64), String> {
    lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            let run = v["run"].as_str().expect("run").to_string();
            let seq = v["seq"].as_u64().expect("seq");
            ((run, seq), l.to_string())
        })
        .collect()
}

/// The effects that must happen once per node and version, as a sorted list.
fn once_effects(world: &Path) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = read_effects(&world.join("effects.jsonl"))
        .expect("effects")
        .into_iter()
        .filter(|e| e.op == "install" || e.op == "restart-kubelet" || e.op.starts_with("kubeadm"))
        .map(|e| (e.node, e.op, format!("{:?}", e.version)))
        .collect();
    out.sort();
    out
}

/// Resumes the run on a copy (data + world) until it completes; returns its effects.
async fn complete(base: &Path, policy: &str) -> Vec<(String, String, String)> {
    let extra: Vec<&str> = DAEMON_ARGS
        .iter()
        .copied()
        .chain(["--policy", policy])
        .collect();
    let opts = DaemonOpts {
        base,
        extra: &extra,
    };
    let client = Client::new(&base.join("api.sock"));
    let mut child = spawn_daemon(&opts);
    wait_ready(&client, &mut child).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = common::active(&client).await;
        if v["phase"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed run on {} did not complete: {v:#}",
            base.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill_now();
    once_effects(&base.join("world"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_sled_files_never_lose_an_acknowledged_record_silently() {
    let damages: usize = common::env_number("LOG_DAMAGES", 200);
    let seed = common::env_seed("LOG_DAMAGE_SEED");
    eprintln!("log damage test: {damages} damages, LOG_DAMAGE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, common::FAKE_RUN_POLICY).expect("policy");
    let policy = policy.to_str().expect("utf-8").to_string();

    // A real run, killed right after a random acknowledged record.
    let live = tmp.path().join("live");
    std::fs::create_dir(&live).expect("mkdir");
    let extra: Vec<&str> = DAEMON_ARGS
        .iter()
        .copied()
        .chain(["--policy", &policy])
        .collect();
    let opts = DaemonOpts {
        base: &live,
        extra: &extra,
    };
    let client = Client::new(&live.join("api.sock"));
    let mut child = spawn_daemon(&opts);
    wait_ready(&client, &mut child).await;
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run id").to_string();
    let kill_after: usize = rng.random_range(5..90);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let follower = {
        let (client, seen, run) = (client.clone(), seen.clone(), run.clone());
        tokio::spawn(async move {
            let _ = client
                .lines(&format!("/v1/runs/{run}/events?follow=true"), |l| {
                    seen.lock().expect("lock").push(l.to_string());
                    true
                })
                .await;
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().expect("lock").len() < kill_after && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill_now();
    follower.abort();
    let acked = seen.lock().expect("lock").clone();
    assert!(
        acked.len() >= kill_after.min(5),
        "saw {} records",
        acked.len()
    );
    eprintln!(
        "killed after {} acknowledged records of run {run}",
        acked.len()
    );
    let pristine = tmp.path().join("pristine");
    copy_dir(&live.join("data"), &pristine.join("data"));
    copy_dir(&live.join("world"), &pristine.join("world"));

    // The reference: the undamaged copy opened, and its run resumed to the end.
    let reference = tmp.path().join("reference");
    copy_dir(&pristine, &reference);
    let r = check_log(&reference.join("data"), &[]);
    assert!(r.ok, "the undamaged log does not open: {}", r.stderr);
    let want = by_key(&r.stdout);
    for l in &acked {
        let v: Value = serde_json::from_str(l).expect("JSON");
        let k = (run.clone(), v["seq"].as_u64().expect("seq"));
        assert_eq!(
            want.get(&k),
            Some(l),
            "acknowledged record {k:?} missing undamaged"
        );
    }
    let reference_effects = complete(&reference, &policy).await;

    let mut opened = 0;
    let mut refused = 0;
    let mut rebuilt = 0;
    let mut resumed = 0;
    for i in 0..damages {
        let work = tmp.path().join("work");
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&pristine, &work);
        let data = work.join("data");
        let what = damage(&data, &mut rng);
        let ctx = format!("damage {i} ({what}), LOG_DAMAGE_SEED={seed}");
        let mut r = check_log(&data, &[]);
        assert!(
            r.code == Some(0) || r.code == Some(1),
            "{ctx}: exit {:?}, not a clean refusal:\n{}",
            r.code,
            r.stderr
        );
        if !r.ok {
            refused += 1;
            let names_range = r.stderr.contains(&run) && r.stderr.contains("seq");
            let unopenable = r.stderr.contains("cannot be opened")
                && r.stderr.contains(&data.display().to_string())
                && r.stderr.contains("--rebuild-log");
            assert!(
                names_range || unopenable,
                "{ctx}: the refusal names neither the run and range nor a way out:\n{}",
                r.stderr
            );
            if !unopenable {
                continue;
            }
            // The way out it names must work.
            r = check_log(&data, &["--rebuild-log"]);
            assert!(r.ok, "{ctx}: --rebuild-log failed:\n{}", r.stderr);
            rebuilt += 1;
        } else {
            opened += 1;
        }
        let got = by_key(&r.stdout);
        for l in &acked {
            let v: Value = serde_json::from_str(l).expect("JSON");
            let k = (run.clone(), v["seq"].as_u64().expect("seq"));
            assert_eq!(
                got.get(&k),
                Some(l),
                "{ctx}: acknowledged record {k:?} lost or changed, silently"
            );
        }
        for (k, l) in &got {
            assert_eq!(
                want.get(k),
                Some(l),
                "{ctx}: record {k:?} is not the undamaged one"
            );
        }
        let seqs: BTreeSet<u64> = got.keys().map(|(_, s)| *s).collect();
        assert_eq!(
            seqs.len() as u64,
            seqs.last().map_or(0, |s| s + 1),
            "{ctx}: a gap in the opened log"
        );
        // Now and then, resume the run on the damaged copy: the same effects as undamaged.
        if resumed * 25 <= i {
            resumed += 1;
            let effects = complete(&work, &policy).await;
            assert_eq!(
                effects, reference_effects,
                "{ctx}: the run resumed on the damaged copy did not do what the undamaged one did"
            );
        }
    }
    eprintln!(
        "log damage test: {damages} damages: {opened} opened intact, {refused} refused \
         ({rebuilt} of them rebuilt from the witness), {resumed} resumed to completion"
    );
}
