//! `upgradectl plan` as an operator runs it from a laptop, with captured files: the
//! removed-API gate reads each apiserver's `/metrics` and Helm's release Secrets.

use std::path::PathBuf;
use std::process::Command;

use upgraded_tests::binary;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../planner/tests/fixtures")
        .join(name)
}

/// The seed cluster, moved back to 1.31 (every component at v1.31.6).
fn snapshot_at_1_31(dir: &std::path::Path) -> PathBuf {
    let seed = std::fs::read_to_string(fixture("seed-cluster.json")).expect("seed");
    let path = dir.join("cluster.json");
    std::fs::write(&path, seed.replace("v1.32.4", "v1.31.6")).expect("write");
    path
}

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("upgradectl"))
        .arg("plan")
        .args(args)
        .output()
        .expect("upgradectl plan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_with_captured_apiserver_metrics_blocks_the_hop_and_names_the_series() {
    let dir = tempfile::tempdir().expect("tmp");
    let snap = snapshot_at_1_31(dir.path());
    let clean = format!("cp-1={}", fixture("apiserver-metrics-clean.txt").display());
    let dirty = format!("cp-2={}", fixture("apiserver-metrics-cp-2.txt").display());
    let snap = snap.to_string_lossy().into_owned();
    let to_1_32 = |metrics: [&str; 2]| {
        plan(&[
            "--snapshot",
            &snap,
            "--to",
            "v1.32.4",
            "--apiserver-metrics",
            metrics[0],
            "--apiserver-metrics",
            metrics[1],
        ])
    };
    let (code, out, err) = to_1_32([&clean, &dirty]);
    assert_eq!(code, 2, "blocked plans exit 2\n{out}\n{err}");
    assert!(out.contains("removed-api-in-use"), "{out}");
    assert!(
        out.contains("flowcontrol.apiserver.k8s.io/v1beta3 flowschemas"),
        "{out}"
    );
    assert!(out.contains("apiserver cp-2"), "{out}");
    // The same cluster with clean counters on both: not blocked by it.
    let clean2 = format!("cp-2={}", fixture("apiserver-metrics-clean.txt").display());
    let (_, out, err) = to_1_32([&clean, &clean2]);
    assert!(!out.contains("removed-api-in-use"), "{out}\n{err}");
}

#[test]
fn plan_refuses_bad_api_usage_files_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    let snap = snapshot_at_1_31(dir.path()).to_string_lossy().into_owned();
    let html = dir.path().join("cp-1.txt");
    std::fs::write(&html, "<html><body>401 Unauthorized</body></html>\n").expect("write");
    let (code, _, err) = plan(&[
        "--snapshot",
        &snap,
        "--apiserver-metrics",
        &html.to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--apiserver-metrics") && err.contains("cp-1.txt") && err.contains("line 1"),
        "{err}"
    );
    let (code, _, err) = plan(&[
        "--snapshot",
        &snap,
        "--apiserver-metrics",
        "/nonexistent/cp-9.txt",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("reading /nonexistent/cp-9.txt"), "{err}");
    let broken = dir.path().join("helm.json");
    std::fs::write(&broken, "{\"kind\": \"List\", \"items\": [{\"kind\": \"Secret\", \"metadata\": {\"namespace\": \"prod\", \"name\": \"sh.helm.release.v1.web.v1\", \"labels\": {\"owner\": \"helm\", \"status\": \"deployed\"}}, \"data\": {\"release\": \"%%%\"}}]}").expect("write");
    let (code, _, err) = plan(&[
        "--snapshot",
        &snap,
        "--helm-secrets",
        &broken.to_string_lossy(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("secret prod/sh.helm.release.v1.web.v1") && err.contains("base64"),
        "{err}"
    );
    let (code, _, err) = plan(&["--snapshot", &snap, "--apiserver-metrcs", "x"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(
        err.contains("--apiserver-metrics"),
        "suggests the flag: {err}"
    );
}
