//! `upgradectl sim serve`: the sandbox users point kubectl at to rehearse drains.

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
