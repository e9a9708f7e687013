//! The lab, end to end: four nodes (one control plane with etcd, three workers) reached over
//! real SSH with strict host keys; stub tools that behave like kubeadm/apt/systemctl and move
//! the sim; a real etcd snapshot taken and verified by a trial restore; every fault; and a
//! teardown that leaves nothing — also when the test panics.
//!
//! Needs root (CI runs as root); without it these tests fail, they never skip.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use upgraded_events::version::Version;
use upgraded_sim::{Clock, SimServer, scenario};
use upgraded_tests::lab::{Lab, LabSpec, NodeSpec, leftovers};

fn spec(workers: usize) -> LabSpec {
    let mut nodes = vec![NodeSpec {
        name: "cp-1".into(),
        control_plane: true,
    }];
    for i in 1..=workers {
        nodes.push(NodeSpec {
            name: format!("w-{i}"),
            control_plane: false,
        });
    }
    LabSpec {
        nodes,
        version: (1, 33, 5),
        stub: env!("CARGO_BIN_EXE_labstub").into(),
    }
}

/// Exit code of `ssh node command`, giving up after `secs` (frozen nodes never answer).
fn ssh_status_within(lab: &Lab, node: &str, command: &str, secs: u32) -> Option<i32> {
    let n = lab.node(node).expect("node exists");
    Command::new("timeout")
        .arg(secs.to_string())
        .arg("ssh")
        .args(lab.ssh_args(n.addr, 2))
        .arg("--")
        .arg(command)
        .output()
        .expect("ssh runs")
        .status
        .code()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `needles` occur in `calls` in this order (other calls may come between).
fn assert_in_order(calls: &[String], needles: &[&str]) {
    let mut it = calls.iter();
    for n in needles {
        assert!(
            it.any(|c| c == n),
            "{n:?} missing or out of order in:\n{}",
            calls.join("\n")
        );
    }
}

#[test]
fn four_nodes_over_ssh_with_stubs_etcd_and_every_fault_then_nothing_left() {
    let mut lab = Lab::start(spec(3)).expect("the lab starts (needs root)");
    let id = lab.id.clone();
    let world = scenario::build("lab", Clock::real(100.0), 5).expect("lab scenario");
    let server = SimServer::start(world, SocketAddr::new(lab.host_addr.into(), 0))
        .expect("the sim serves on the lab bridge");
    lab.set_sim_url(&server.url()).expect("sim URL written");

    // Every node answers over SSH as itself, with its own /etc and the stubs in place.
    for n in ["cp-1", "w-1", "w-2", "w-3"] {
        let out = lab
            .ssh_ok(n, "echo $LAB_NODE; command -v kubeadm; /usr/bin/apt-mark showhold | head -1; kubeadm version -o short")
            .expect("ssh works");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], n);
        assert_eq!(lines[1], "/usr/local/bin/kubeadm");
        assert_eq!(
            lines[2], "kubeadm",
            "apt-mark by absolute path is the stub: {out}"
        );
        assert_eq!(lines[3], "v1.33.5");
    }
    lab.ssh_ok("w-1", "echo mine > /etc/lab-mark")
        .expect("write /etc");
    let other = lab.ssh("w-2", "test -e /etc/lab-mark").expect("ssh");
    assert!(!other.status.success(), "w-2 does not see w-1's /etc");
    assert!(
        !std::path::Path::new("/etc/lab-mark").exists(),
        "the host does not either"
    );

    // Strict host keys: a known_hosts entry with another node's key is refused.
    let wrong = lab.root.join("wrong_known_hosts");
    let cp_key = std::fs::read_to_string(lab.node("cp-1").expect("cp-1").dir.join("host_key.pub"))
        .expect("key");
    let w1 = lab.node("w-1").expect("w-1").addr;
    std::fs::write(
        &wrong,
        format!(
            "{w1} {}\n",
            cp_key
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
    .expect("write");
    let args: Vec<String> = lab
        .ssh_args(w1, 2)
        .into_iter()
        .map(|a| {
            if a.starts_with("UserKnownHostsFile=") {
                format!("UserKnownHostsFile={}", wrong.display())
            } else {
                a
            }
        })
        .collect();
    let refused = Command::new("ssh")
        .args(&args)
        .arg("true")
        .output()
        .expect("ssh runs");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");

    // A worker's kubelet upgrade, as the runbook does it; the stubs behave like apt.
    let held = lab.ssh_ok("w-1", "apt-mark showhold").expect("showhold");
    assert_eq!(held, "kubeadm\nkubectl\nkubelet\n");
    let wrong_repo = lab
        .ssh("w-1", "apt-get install -y kubelet=1.34.2-1.1")
        .expect("ssh");
    assert_eq!(
        wrong_repo.status.code(),
        Some(100),
        "1.34 is not in the 1.33 repository"
    );
    lab.ssh_ok(
        "w-1",
        "sed -i 's#/stable:/v1.33/#/stable:/v1.34/#' /etc/apt/sources.list.d/kubernetes.list && apt-get update",
    )
    .expect("switch repository");
    let madison = lab
        .ssh_ok("w-1", "apt-cache madison kubelet")
        .expect("madison");
    assert!(
        madison.contains(" kubelet | 1.34.2-1.1 | https://pkgs.k8s.io/core:/stable:/v1.34/deb"),
        "{madison}"
    );
    let still_held = lab
        .ssh("w-1", "apt-get install -y kubelet=1.34.2-1.1")
        .expect("ssh");
    assert_eq!(still_held.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&still_held.stderr).contains("Held packages were changed"));
    lab.ssh_ok(
        "w-1",
        "apt-mark unhold kubelet kubectl && apt-get install -y kubelet=1.34.2-1.1 kubectl=1.34.2-1.1 && apt-mark hold kubelet kubectl && systemctl daemon-reload && systemctl restart kubelet",
    )
    .expect("upgrade w-1's kubelet");
    assert!(
        !server.sim.world().nodes["w-1"].ready,
        "NotReady while the kubelet restarts"
    );
    wait_for("w-1 Ready at v1.34.2", Duration::from_secs(10), || {
        let w = server.sim.world();
        w.nodes["w-1"].ready && w.nodes["w-1"].kubelet == Version::new(1, 34, 2)
    });
    assert_eq!(
        lab.ssh_ok("w-1", "kubelet --version").expect("kubelet"),
        "Kubernetes v1.34.2\n"
    );

    // The control plane: kubeadm refuses a version above its own, then applies.
    let early = lab
        .ssh("cp-1", "kubeadm upgrade apply v1.34.6 -y")
        .expect("ssh");
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("Upgrade kubeadm first"));
    lab.ssh_ok(
        "cp-1",
        "sed -i 's#/stable:/v1.33/#/stable:/v1.34/#' /etc/apt/sources.list.d/kubernetes.list && apt-mark unhold kubeadm && apt-get install -y kubeadm=1.34.6-1.1 && apt-mark hold kubeadm && kubeadm upgrade plan && kubeadm upgrade apply v1.34.6 -y",
    )
    .expect("kubeadm upgrade apply");
    {
        let w = server.sim.world();
        let cp = w.nodes["cp-1"]
            .control_plane
            .clone()
            .expect("cp-1 runs a control plane");
        assert_eq!(cp.apiserver, Version::new(1, 34, 6));
        assert_eq!(
            w.nodes["cp-1"].kubelet,
            Version::new(1, 33, 5),
            "the kubelet waits for its own step"
        );
    }
    let calls: Vec<String> = lab
        .calls("cp-1")
        .expect("calls")
        .iter()
        .map(|c| c.line())
        .collect();
    assert_in_order(
        &calls,
        &[
            "kubeadm upgrade apply v1.34.6 -y",
            "apt-mark unhold kubeadm",
            "apt-get install -y kubeadm=1.34.6-1.1",
            "apt-mark hold kubeadm",
            "kubeadm upgrade plan",
            "kubeadm upgrade apply v1.34.6 -y",
        ],
    );
    assert_eq!(
        lab.packages("cp-1").expect("state")["kubeadm"],
        "1.34.6-1.1"
    );
    let w2 = lab
        .ssh_ok("w-2", "kubeadm upgrade node")
        .expect("upgrade node on a worker");
    assert!(w2.contains("Not a control plane node"), "{w2}");

    // A real etcd snapshot, verified by a trial restore, copied off the node intact.
    wait_for("etcd healthy", Duration::from_secs(15), || {
        lab.ssh(
            "cp-1",
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 endpoint health",
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    });
    let out = lab
        .ssh_ok(
            "cp-1",
            "set -e; export ETCDCTL_API=3; etcdctl --endpoints=http://127.0.0.1:2379 put /lab/key hello >/dev/null; \
             mkdir -p /var/lib/etcd-backup; etcdctl --endpoints=http://127.0.0.1:2379 snapshot save /var/lib/etcd-backup/snap.db >/dev/null; \
             d=$(mktemp -d); etcdctl snapshot restore /var/lib/etcd-backup/snap.db --data-dir $d/restored >/dev/null 2>&1; \
             test -d $d/restored/member; sha256sum /var/lib/etcd-backup/snap.db",
        )
        .expect("snapshot save and trial restore");
    let remote_sum = out.split_whitespace().next().expect("a sha256").to_string();
    let n = lab.node("cp-1").expect("cp-1");
    let copy = Command::new("ssh")
        .args(lab.ssh_args(n.addr, 2))
        .arg("cat /var/lib/etcd-backup/snap.db")
        .output()
        .expect("copy off");
    assert!(
        copy.status.success() && copy.stdout.len() > 1000,
        "snapshot copied"
    );
    let local = lab.root.join("snap.db");
    std::fs::write(&local, &copy.stdout).expect("write copy");
    let local_sum = Command::new("sha256sum")
        .arg(&local)
        .output()
        .expect("sha256sum");
    assert!(String::from_utf8_lossy(&local_sum.stdout).starts_with(&remote_sum));
    let bad = lab
        .ssh(
            "cp-1",
            "export ETCDCTL_API=3; head -c 20000 /var/lib/etcd-backup/snap.db > /var/tmp/bad.db; d=$(mktemp -d); etcdctl snapshot restore /var/tmp/bad.db --data-dir $d/r",
        )
        .expect("ssh");
    assert!(
        !bad.status.success(),
        "a truncated snapshot fails the trial restore"
    );

    // Stub faults: fail, hang, slow — each recorded.
    lab.set_tool_fault("w-2", "kubeadm", Some("fail:3 version"))
        .expect("fault");
    assert_eq!(
        lab.ssh("w-2", "kubeadm version -o short")
            .expect("ssh")
            .status
            .code(),
        Some(3)
    );
    assert!(
        lab.ssh("w-2", "kubeadm upgrade node")
            .expect("ssh")
            .status
            .success(),
        "the rule only matches `version`"
    );
    lab.set_tool_fault("w-2", "kubeadm", Some("hang"))
        .expect("fault");
    assert_eq!(
        lab.ssh("w-2", "timeout 1 kubeadm version -o short")
            .expect("ssh")
            .status
            .code(),
        Some(124)
    );
    lab.set_tool_fault("w-2", "kubeadm", Some("slow:1"))
        .expect("fault");
    let t = Instant::now();
    assert!(
        lab.ssh("w-2", "kubeadm version -o short")
            .expect("ssh")
            .status
            .success()
    );
    assert!(t.elapsed() >= Duration::from_secs(1));
    lab.set_tool_fault("w-2", "kubeadm", None).expect("clear");
    let notes: Vec<String> = lab
        .calls("w-2")
        .expect("calls")
        .iter()
        .map(|c| c.note.clone())
        .collect();
    assert!(
        notes.iter().any(|n| n == "fault hang") && notes.iter().any(|n| n == "fault slow:1"),
        "{notes:?}"
    );

    // Crash: the node is gone; it comes back with its disk.
    lab.ssh_ok("w-3", "echo kept > /var/lib/marker")
        .expect("write /var");
    lab.crash("w-3").expect("crash");
    assert_eq!(
        lab.ssh("w-3", "true").expect("ssh").status.code(),
        Some(255)
    );
    lab.restart("w-3").expect("restart");
    assert_eq!(
        lab.ssh_ok("w-3", "cat /var/lib/marker").expect("ssh"),
        "kept\n"
    );

    // Partition: unreachable, then reachable again.
    lab.partition("w-2", true).expect("cut");
    let t = Instant::now();
    assert_ne!(ssh_status_within(&lab, "w-2", "true", 6), Some(0));
    assert!(t.elapsed() < Duration::from_secs(7));
    lab.partition("w-2", false).expect("heal");
    lab.wait_ssh(lab.node("w-2").expect("w-2"), Duration::from_secs(10))
        .expect("w-2 back");

    // Freeze: the control plane node (sshd and etcd) stops answering, then thaws intact.
    lab.freeze("cp-1", true).expect("freeze");
    assert_ne!(ssh_status_within(&lab, "cp-1", "true", 4), Some(0));
    lab.freeze("cp-1", false).expect("thaw");
    lab.wait_ssh(lab.node("cp-1").expect("cp-1"), Duration::from_secs(10))
        .expect("cp-1 back");
    let got = lab
        .ssh_ok("cp-1", "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 get /lab/key --print-value-only")
        .expect("etcd answers after the thaw");
    assert_eq!(got, "hello\n");

    drop(server);
    lab.teardown();
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[test]
fn a_failing_test_still_leaves_nothing_behind() {
    let id = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::start(spec(1)).expect("the lab starts (needs root)");
        *id.lock().unwrap_or_else(|e| e.into_inner()) = lab.id.clone();
        lab.ssh_ok("w-1", "true").expect("ssh works");
        lab.freeze("w-1", true).expect("freeze");
        panic!("the test fails with a frozen node");
    });
    assert!(result.is_err());
    let id = id.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(!id.is_empty());
    assert_eq!(leftovers(&id), Vec::<String>::new());
}
