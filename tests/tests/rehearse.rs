//! `upgradectl rehearse` as a user runs it: a snapshot taken by the real kubectl from the
//! sim's seed cluster, rehearsed by the real binaries (upgradectl → upgraded-rehearse), the
//! report read as JSON and as a table; a rehearsed failure; bad input refused by name.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The seed's policy without its maintenance windows (the rehearsal's clock starts on a
/// Monday morning; windows would only add waiting).
const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
target: v1.35.3
packageManager: apt
generations:
  label: node.kubernetes.io/instance-type
  order: [dell-r640, dell-r740, hp-dl380]
  maxUnavailable: 2
  canaries: 1
canarySoak: 30m
waitBetweenBatches: 5m
drainTimeout: 5m
";

fn rehearse(args: &[&str]) -> Output {
    Command::new(upgraded_tests::binary("upgradectl"))
        .arg("rehearse")
        .args(args)
        .output()
        .expect("upgradectl runs")
}

/// The seed cluster as `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json` prints it.
fn seed_snapshot(dir: &std::path::Path) -> std::path::PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    let mut sim = Command::new(upgraded_tests::binary("upgradectl"))
        .args(["sim", "serve", "--scenario", "seed", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("upgradectl sim serve runs");
    let start = Instant::now();
    while !kubeconfig.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no kubeconfig");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("/usr/bin/kubectl")
        .args(["get", "nodes,pods,pdb,deploy,sts,ds", "-A", "-o", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", dir.join("cache"))
        .env("HOME", dir)
        .output()
        .expect("kubectl runs");
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("seed.json");
    std::fs::write(&path, &out.stdout).expect("snapshot written");
    path
}

#[test]
fn the_seed_snapshot_rehearses_with_batches_of_two_and_every_budget_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = seed_snapshot(dir.path());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let html = dir.path().join("timeline.html");
    let (s, p, h) = (
        snapshot.to_str().expect("path"),
        policy.to_str().expect("path"),
        html.to_str().expect("path"),
    );
    let out = rehearse(&[
        "--snapshot",
        s,
        "--policy",
        p,
        "--assume-fixed",
        "-o",
        "json",
        "--timeline-html",
        h,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let planned = &r["planned"];
    assert_eq!(planned["outcome"], "completed", "{r:#}");
    assert_eq!(r["nodes"], 15);
    // What --assume-fixed did: the seed's two blockers.
    let fixed = r["fixed"].to_string();
    assert!(
        fixed.contains("default/debug-shell") && fixed.contains("r640-03"),
        "{fixed}"
    );
    assert_eq!(planned["budget_violations"], serde_json::json!([]), "{r:#}");
    assert_eq!(planned["pending_pods"], serde_json::json!([]), "{r:#}");
    assert_eq!(planned["parked"], serde_json::json!([]), "{r:#}");
    assert_eq!(planned["most_unavailable"], 2, "{r:#}");
    // The web and api budgets each allow an eviction: two r740s drain together, taking
    // turns at them (the refusals are the turns).
    let phase = |name: &str| {
        planned["phases"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["phase"] == name))
            .unwrap_or_else(|| panic!("no phase {name}: {r:#}"))
            .clone()
    };
    assert_eq!(phase("dell-r740 v1.35.3")["largest_batch"], 2, "{r:#}");
    assert_eq!(phase("dell-r640 v1.35.3")["largest_batch"], 2, "{r:#}");
    assert!(phase("canaries v1.35.3")["secs"].as_u64() > Some(3 * 1800));
    let blocked = planned["blocked_evictions"].to_string();
    assert!(blocked.contains("pdb/shop/api"), "{blocked}");
    let makespan = planned["makespan_secs"].as_u64().expect("makespan");
    let one = r["one_at_a_time"]["makespan_secs"].as_u64().expect("one");
    let bound = r["lower_bound"]["total_secs"].as_u64().expect("bound");
    assert!(bound > 0 && bound <= makespan && makespan < one, "{r:#}");
    assert!(r["speedup"].as_f64() > Some(1.0), "{r:#}");
    assert!(r["to_lower_bound"].as_f64() < Some(1.5), "{r:#}");
    let mode = std::fs::metadata(&html)
        .expect("timeline")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let page = std::fs::read_to_string(&html).expect("timeline");
    assert!(page.contains("r740-02") && page.contains("<svg"));

    // The same as a table: every field named.
    let out = rehearse(&["--snapshot", s, "--policy", p, "--assume-fixed"]);
    let table = String::from_utf8_lossy(&out.stdout);
    for field in [
        "makespan",
        "most unavailable   2 node(s)",
        "budget violations  0",
        "pods Pending       0",
        "one at a time",
        "lower bound",
        "PHASE",
        "BLOCKED EVICTIONS",
        "PARKED NODES",
        "assumed fixed: deleted the unmanaged pod default/debug-shell",
    ] {
        assert!(table.contains(field), "{field:?} missing:\n{table}");
    }
    assert!(!table.contains('{'), "{table}");
}

/// The planner's seed snapshot (`planner/tests/fixtures/seed-cluster.json`, 56 pods): the
/// web and api budgets allow an eviction each, so every worker generation goes two at a
/// time, as the seed's runbook suggests.
#[test]
fn the_planners_seed_snapshot_rehearses_r740_and_dl380_two_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let snapshot = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../planner/tests/fixtures/seed-cluster.json"
    );
    let out = rehearse(&[
        "--snapshot",
        snapshot,
        "--policy",
        policy.to_str().expect("path"),
        "--assume-fixed",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let planned = &r["planned"];
    assert_eq!(planned["outcome"], "completed", "{r:#}");
    for (phase, batches) in [
        ("dell-r640 v1.35.3", 2),
        ("dell-r740 v1.35.3", 2),
        ("hp-dl380 v1.35.3", 1),
    ] {
        let p = planned["phases"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["phase"] == phase))
            .unwrap_or_else(|| panic!("no phase {phase}: {r:#}"));
        assert_eq!(p["largest_batch"], 2, "{phase}: {r:#}");
        assert_eq!(p["batches"], batches, "{phase}: {r:#}");
    }
    assert_eq!(planned["budget_violations"], serde_json::json!([]));
    assert_eq!(planned["pending_pods"], serde_json::json!([]));
}

/// The seed's policy has windows (Tue–Thu 20:00–06:00 Europe/Berlin): started on the
/// default Monday morning the run first waits a day and a half; started on Tuesday at 19:00
/// Berlin time it waits an hour.
#[test]
fn a_rehearsal_meets_the_maintenance_windows_from_its_start() {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../planner/tests/fixtures/seed-policy.yaml"
    );
    let makespan = |start: Option<&str>| {
        let mut args = vec![
            "--scenario",
            "seed",
            "--policy",
            policy,
            "--assume-fixed",
            "--no-compare",
            "-o",
            "json",
        ];
        if let Some(s) = start {
            args.extend(["--start", s]);
        }
        let out = rehearse(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        (
            r["start"].as_str().unwrap_or_default().to_string(),
            r["planned"]["makespan_secs"].as_u64().expect("makespan"),
        )
    };
    let (start, monday) = makespan(None);
    assert!(start.starts_with("2026-01-05T06:00"), "{start}");
    let (start, tuesday) = makespan(Some("2026-12-01T18:00:00Z"));
    assert!(start.starts_with("2026-12-01T18:00"), "{start}");
    assert!(monday > 36 * 3600, "{monday}");
    assert!(tuesday < 10 * 3600 && tuesday > 3600, "{tuesday}");
}

#[test]
fn a_generation_that_cannot_run_the_new_kubelet_is_rehearsed_as_a_halt() {
    let out = rehearse(&[
        "--scenario",
        "lab",
        "--to",
        "v1.35.3",
        "--no-compare",
        "--fault",
        "kubelet-fails:hp-dl380@v1.34.0",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    // Not a success: the rehearsed run did not complete.
    assert_eq!(out.status.code(), Some(3), "{table}");
    assert!(table.contains("outcome            halted"), "{table}");
    // The daemon's own answer to a worker that fails its gate: rolled back and parked.
    assert!(
        table.contains("w-3 was rolled back to v1.33.5 and parked"),
        "{table}"
    );
    assert!(table.contains("PARKED NODES\nw-3: "), "{table}");
    assert!(table.contains("fault: kubelet-fails:hp-dl380@"), "{table}");
}

/// Drift within a generation: a node on another container runtime is named, and with
/// `drift: subgroup` upgraded after a canary of its own (after its generation's majority
/// canary); without it, the plan blocks on it; a mistyped field is refused by name.
#[test]
fn a_drifted_node_is_named_and_gets_its_own_canary() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, format!("{POLICY}drift: subgroup\n")).expect("policy");
    let policy = policy.to_string_lossy().into_owned();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--scenario",
            "seed",
            "--assume-fixed",
            "--no-compare",
            "--fault",
            "drift:r740-03:container-runtime=containerd://2.1.4",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        a.extend(extra.iter().map(ToString::to_string));
        a
    };
    let mut with = args(&[]);
    with.extend(["--policy".to_string(), policy]);
    let out = rehearse(&with.iter().map(String::as_str).collect::<Vec<_>>());
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.contains("plan warning: drift-subgroup: node r740-03 differs from generation dell-r740 in container-runtime: containerd://2.1.4"),
        "{table}"
    );
    assert!(
        table.contains("canary dell-r740: r740-01; canary dell-r740 (container-runtime containerd://2.1.4): r740-03"),
        "{table}"
    );
    assert!(table.contains("outcome            completed"), "{table}");
    // The default policy blocks on it (a rehearsal runs a blocked plan anyway).
    let out = rehearse(
        &args(&["--to", "v1.35.3"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("plan blocker (rehearsed anyway): drift-must-match: node r740-03"),
        "{table}"
    );
    let out = rehearse(&["--scenario", "seed", "--fault", "drift:r740-03:colour=blue"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("expected drift:NODE:FIELD=VALUE"), "{err}");
    // What only the machines' agents see: a kubelet config key (read from /configz) and a
    // pending reboot. The rehearsed run then meets kubeadm dropping that hand edit.
    let out = rehearse(&[
        "--scenario",
        "seed",
        "--assume-fixed",
        "--no-compare",
        "--to",
        "v1.35.3",
        "--fault",
        "drift:r740-03:kubelet.reservedSystemCPUs=0-1",
        "--fault",
        "drift:r740-02:reboot-required=true",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("drift-must-match: node r740-03 differs from generation dell-r740 in kubelet:reservedSystemCPUs: \"0-1\" where 3 of 4 run unset"),
        "{table}"
    );
    assert!(
        table.contains(
            "pending-reboot: node r740-02 waits for a reboot (/var/run/reboot-required exists)"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "dropped a hand edit of the kubelet config (reservedSystemCPUs was \"0-1\" and is gone)"
        ),
        "{table}"
    );
    let out = rehearse(&["--scenario", "seed", "--fault", "drift:r740-03:swap=maybe"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("swap (on|off)"),
        "{:?}",
        out
    );
}

/// Helm's releases handed to `rehearse` are in the rehearsed cluster, where the start finds
/// a chart's FlowSchema at flowcontrol v1beta3 for a hop to 1.32 and says so; a file that
/// is not Helm's Secrets is refused by name.
#[test]
fn helm_releases_handed_to_rehearse_are_judged_at_its_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let helm = dir.path().join("helm.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        upgraded_tests::helm::release_secret("default", "traffic", upgraded_tests::helm::FLOWSCHEMA_V1BETA3)
    ]});
    std::fs::write(&helm, list.to_string()).expect("helm.json");
    let helm = helm.to_string_lossy().into_owned();
    // The lab as it stood at 1.31 (the last hop that removes an API is 1.32's).
    let lab = dir.path().join("lab.json");
    let out = Command::new(upgraded_tests::binary("upgradectl"))
        .args(["sim", "snapshot", "--scenario", "lab", "-o"])
        .arg(&lab)
        .output()
        .expect("upgradectl runs");
    assert!(out.status.success(), "{out:?}");
    let at_131 = std::fs::read_to_string(&lab)
        .expect("snapshot")
        .replace("v1.33.5", "v1.31.6");
    std::fs::write(&lab, at_131).expect("snapshot");
    let lab = lab.to_string_lossy().into_owned();
    let out = rehearse(&[
        "--snapshot",
        &lab,
        "--to",
        "v1.32.4",
        "--no-compare",
        "--helm-secrets",
        &helm,
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("plan warning: helm-removed-api:")
            && table.contains("traffic")
            && table.contains("flowcontrol.apiserver.k8s.io/v1beta3"),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"kind\": \"Pod\", \"metadata\": {\"name\": \"x\"}}").expect("bad");
    let out = rehearse(&[
        "--snapshot",
        &lab,
        "--to",
        "v1.32.4",
        "--helm-secrets",
        &bad.to_string_lossy(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--helm-secrets"),
        "{out:?}"
    );
}

/// The guide's "networking between nodes fails": a generation whose pod network breaks with
/// the new kubelet passes verify (Ready, at its versions) and is caught by its pod-network
/// check before its uncordon.
#[test]
fn a_generation_whose_pod_network_breaks_is_caught_by_its_check() {
    let out = rehearse(&[
        "--scenario",
        "lab",
        "--to",
        "v1.35.3",
        "--no-compare",
        "--fault",
        "net-broken:hp-dl380@v1.34.0",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{table}");
    assert!(table.contains("outcome            halted"), "{table}");
    assert!(table.contains("check pod-network failed: dial "), "{table}");
    assert!(
        table.contains("w-3 was rolled back to v1.33.5 and parked"),
        "{table}"
    );
    assert!(table.contains("PARKED NODES\nw-3: "), "{table}");
    assert!(table.contains("fault: net-broken:hp-dl380@"), "{table}");
    // A storage fault without a StorageClass to check would be rehearsed as nothing.
    let out = rehearse(&[
        "--scenario",
        "lab",
        "--to",
        "v1.35.3",
        "--no-compare",
        "--fault",
        "storage-broken:hp-dl380@v1.34.0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the policy names no StorageClass to check (checks.storageClasses)"),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--scenario",
                "lab",
                "--to",
                "v1.35.3",
                "--fault",
                "explode:w-1",
            ],
            "unknown kind \"explode\"",
        ),
        (
            &["--snapshot", "/nope.json", "--to", "v1.35.3"],
            "/nope.json",
        ),
        (
            &["--snapshot", "/etc/hostname", "--to", "v1.35.3"],
            "not JSON",
        ),
        (&["--scenario", "lab"], "--to"),
        (
            &[
                "--scenario",
                "lab",
                "--to",
                "v1.35.3",
                "--fault",
                "never-ready:ghost",
            ],
            "no such node",
        ),
        (
            &[
                "--scenario",
                "lab",
                "--to",
                "v1.35.3",
                "--start",
                "yesterday",
            ],
            "RFC 3339",
        ),
    ];
    for (args, want) in cases {
        let out = rehearse(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // An existing file is never overwritten.
    let html = dir.path().join("t.html");
    std::fs::write(&html, "mine").expect("file");
    let out = rehearse(&[
        "--scenario",
        "lab",
        "--to",
        "v1.35.3",
        "--timeline-html",
        html.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&html).expect("file"), "mine");
    let help = rehearse(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--snapshot"));
    // The daemon's binary answers `rehearse` the same way.
    let via_daemon = Command::new(upgraded_tests::binary("upgraded"))
        .args(["rehearse", "--help"])
        .output()
        .expect("upgraded runs");
    assert_eq!(via_daemon.stdout, help.stdout);
}
