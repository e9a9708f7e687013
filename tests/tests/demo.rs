//! `upgradectl demo --scenario network`, the real binaries end to end: the embedded seed
//! cluster's oldest generation loses its pod network with the new kubelet. Its canary turns
//! Ready at its versions, but its pod-network check fails before the uncordon; the daemon
//! rolls it back, parks it and halts naming the check, and the other generations are never
//! touched.

use std::process::Command;

#[test]
fn the_network_story_is_caught_by_the_canarys_check() {
    let keep = tempfile::tempdir().expect("a temp dir");
    let out = Command::new(upgraded_tests::binary("upgradectl"))
        .args(["demo", "--scenario", "network", "--keep"])
        .arg(keep.path())
        .env("COLUMNS", "120")
        .output()
        .expect("upgradectl demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("lose their pod network with kubelet 1.35"),
        "{stdout}"
    );
    let halted = stdout
        .lines()
        .find(|l| l.contains("run: halted: "))
        .unwrap_or_else(|| panic!("the run halted: {stdout}"));
    assert!(
        halted.contains("checks after-canary failed")
            && halted.contains("check pod-network failed: dial ")
            && halted.contains("r640-01 was rolled back to v1.32.4 and parked"),
        "{halted}"
    );
    // The canary's checks failed before any uncordon of it at the new version.
    let failed_check = stdout
        .find("✗ check pod-network")
        .expect("the check's failure is shown");
    let rolling_back = stdout
        .find("↩ rolling back")
        .expect("the rollback is shown");
    assert!(failed_check < rolling_back);
    let before_rollback = &stdout[..rolling_back];
    assert!(
        !before_rollback
            .lines()
            .any(|l| l.contains("r640-01") && l.contains("✓ uncordon")),
        "r640-01 was uncordoned at the new version: {before_rollback}"
    );
    // No other worker was touched.
    for other in ["r740-", "dl380-", "r640-02", "r640-03"] {
        assert!(
            !stdout
                .lines()
                .any(|l| l.contains(other) && l.contains("▶ cordon")),
            "{other} was cordoned: {stdout}"
        );
    }
    assert!(stdout.contains("cordoned: none"), "{stdout}");
}
