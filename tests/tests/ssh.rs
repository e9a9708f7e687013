//! The SSH adapter against lab nodes (real sshd in network namespaces, stub tools, real etcd):
//! scripts and their call logs, a ProxyJump bastion from ssh_config, strict host keys, hostile
//! names, hung commands, the per-node session cap, snapshots copied off the node, reconnects
//! after a crash and a freeze, and no SSH master left behind.
//!
//! Needs root (CI runs as root); without it these tests fail, they never skip.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use upgraded_events::Host;

use upgraded_daemon::ports::{NodeExecutor, RemoteCommand};
use upgraded_daemon::remote::Scripts;
use upgraded_daemon::ssh::{SshNodes, SshOptions};
use upgraded_events::Version;
use upgraded_events::fault::FailureKind;
use upgraded_planner::policy::PlanPolicy;
use upgraded_tests::lab::{Lab, LabSpec, NodeSpec, leftovers};

fn spec() -> LabSpec {
    let node = |name: &str, cp: bool| NodeSpec {
        name: name.into(),
        control_plane: cp,
    };
    LabSpec {
        nodes: vec![node("cp-1", true), node("w-1", false), node("w-2", false)],
        version: (1, 33, 5),
        stub: env!("CARGO_BIN_EXE_labstub").into(),
    }
}

fn v(s: &str) -> Version {
    s.parse().expect("version")
}

/// `ssh` processes whose command line mentions `dir` (the masters of one control dir).
fn masters_under(dir: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ssh"))
        .map(str::to_string)
        .collect()
}

/// The most stub calls of `tool` in flight at once on a node, from the call log: a `slow`
/// fault records its start, the call records its end.
/// The most calls of `tool` running at once among the node's calls from index `since` on
/// (earlier calls may have been killed mid-way by the test's faults, leaving a start
/// without an end).
fn max_in_flight(lab: &Lab, node: &str, tool: &str, since: usize) -> usize {
    let mut edges: Vec<(u64, i32)> = lab
        .calls(node)
        .expect("calls")
        .iter()
        .skip(since)
        .filter(|c| c.tool == tool)
        .skip_while(|c| c.exit != -1)
        .map(|c| (c.t, if c.exit == -1 { 1 } else { -1 }))
        .collect();
    edges.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

struct Firewall(String);

impl Firewall {
    /// Drops the host's own SSH packets to `addr` (bridged traffic between nodes passes).
    fn block_host_to(id: &str, addr: std::net::Ipv4Addr) -> Firewall {
        let table = format!("ulab{id}");
        let script = format!(
            "add table inet {table}\nadd chain inet {table} out {{ type filter hook output priority 0; }}\nadd rule inet {table} out ip daddr {addr} tcp dport 22 drop\n"
        );
        let out = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("nft runs");
        assert!(out.status.success(), "nft rule");
        Firewall(table)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_adapter_runs_quoted_scripts_with_caps_timeouts_and_reconnects() {
    let mut lab = Lab::start(spec()).expect("the lab starts (needs root)");
    let id = lab.id.clone();
    // w-2 is reachable only through cp-1, as behind a bastion.
    let w2 = lab.node("w-2").expect("w-2").addr;
    let _fw = Firewall::block_host_to(&id, w2);
    let config = lab.root.join("ssh_config");
    let text = lab.ssh_config().replace(
        &format!("Host w-2\n  HostName {w2}\n"),
        &format!("Host w-2\n  HostName {w2}\n  ProxyJump cp-1\n"),
    );
    std::fs::write(&config, text).expect("ssh_config");
    let policy = PlanPolicy::from_yaml(
        "node: { etcd: { endpoints: 'http://127.0.0.1:2379', cacert: '', cert: '', key: '' } }",
    )
    .expect("policy");
    let mut o = SshOptions::new(lab.root.join("ssh"), lab.root.join("copies"));
    o.config_file = Some(config.clone());
    o.control_persist_secs = 2;
    o.alive_interval_secs = 1;
    o.connect_timeout_secs = 3;
    o.max_sessions = 4;
    let nodes = SshNodes::new(o.clone(), Scripts::of(&policy)).expect("ssh adapter");
    let t = Duration::from_secs(30);

    // Preflight: every check reported, the node passes for 1.35 (cgroup v2 in the lab).
    let pre = nodes
        .run(
            &Host::new("w-1"),
            &RemoteCommand::Preflight {
                target: v("v1.35.3"),
            },
            t,
        )
        .await
        .expect("preflight");
    assert_eq!(pre.facts["cgroup"], "cgroup2fs", "{:?}", pre.facts);
    assert_eq!(pre.facts["runtime"], "ok");
    assert_eq!(pre.facts["swap_devices"], "0");
    assert_eq!(pre.facts["repository"], "ok");

    // Packages: repository switched to the hop's minor, unhold → install → hold, in order.
    let out = nodes
        .run(
            &Host::new("w-1"),
            &RemoteCommand::InstallPackages {
                version: v("v1.34.6"),
            },
            t,
        )
        .await
        .expect("install");
    assert_eq!(out.facts["installed"], "v1.34.6");
    assert_eq!(out.facts["repository_switched"], "true");
    assert_eq!(out.facts["stdout_sha256"].len(), 64);
    let calls: Vec<String> = lab
        .calls("w-1")
        .expect("calls")
        .iter()
        .filter(|c| c.exit != -1)
        .map(|c| c.line())
        .collect();
    let tail: Vec<&str> = calls
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "apt-mark unhold kubelet kubectl",
            "apt-get update -q",
            "apt-get install -y kubelet=1.34.6-1.1 kubectl=1.34.6-1.1",
            "apt-mark hold kubelet kubectl",
            "kubelet --version",
        ]
    );
    assert_eq!(lab.packages("w-1").expect("state")["kubelet"], "1.34.6-1.1");
    // When the node ran it, by its own clock; the same command again (a re-run after a
    // daemon stop) also says when the node finished the earlier one.
    let ms = |f: &upgraded_events::Facts, k: &str| -> i64 {
        f.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {f:?}"))
    };
    let (started, ended) = (
        ms(&out.facts, "node_started_ms"),
        ms(&out.facts, "node_ended_ms"),
    );
    assert!(started <= ended, "{started} {ended}");
    assert!(
        !out.facts.contains_key("earlier_node_ended_ms"),
        "{:?}",
        out.facts
    );
    let again = nodes
        .run(
            &Host::new("w-1"),
            &RemoteCommand::InstallPackages {
                version: v("v1.34.6"),
            },
            t,
        )
        .await
        .expect("install again");
    assert_eq!(again.facts["already_installed"], "true");
    assert_eq!(ms(&again.facts, "earlier_node_started_ms"), started);
    assert_eq!(ms(&again.facts, "earlier_node_ended_ms"), ended);
    assert!(ms(&again.facts, "node_started_ms") >= ended);
    let list = lab
        .ssh_ok("w-1", "cat /etc/apt/sources.list.d/kubernetes.list")
        .expect("repo file");
    assert!(list.contains("/stable:/v1.34/deb/"), "{list}");

    // A failed install puts the holds back and reports apt's own words.
    let e = nodes
        .run(
            &Host::new("w-1"),
            &RemoteCommand::InstallPackages {
                version: v("v1.34.99"),
            },
            t,
        )
        .await
        .expect_err("no such version");
    assert!(e.what.contains("was not found"), "{e}");
    assert_eq!(e.facts["exit"], "100");
    assert_eq!(
        lab.ssh_ok("w-1", "apt-mark showhold").expect("holds"),
        "kubeadm\nkubectl\nkubelet\n"
    );

    // Through the bastion: w-2 answers although the host cannot reach it directly.
    let direct = lab.ssh("w-2", "true").expect("ssh");
    assert!(
        !direct.status.success(),
        "the firewall blocks the direct path"
    );
    let installed = nodes
        .run(&Host::new("w-2"), &RemoteCommand::InstalledKubelet, t)
        .await
        .expect("via ProxyJump");
    assert_eq!(installed.facts["installed"], "v1.33.5");

    // A hostile name never reaches ssh or a shell.
    for bad in [
        "w-1;reboot",
        "-oProxyCommand=touch /tmp/x",
        "root@w-1",
        "W-1",
    ] {
        let e = nodes
            .run(&Host::new(bad), &RemoteCommand::InstalledKubelet, t)
            .await
            .expect_err("refused");
        assert!(!e.is_retryable() && e.what.contains("DNS"), "{bad}: {e}");
    }

    // A hung command is ended on the node by `timeout`, and the error says so.
    lab.set_tool_fault("w-1", "kubeadm", Some("hang"))
        .expect("fault");
    let started = Instant::now();
    let e = nodes
        .run(
            &Host::new("w-1"),
            &RemoteCommand::KubeadmUpgrade {
                version: v("v1.34.6"),
                apply: false,
            },
            Duration::from_secs(2),
        )
        .await
        .expect_err("hangs");
    assert!(e.what.contains("did not finish within 2s"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    lab.set_tool_fault("w-1", "kubeadm", None).expect("clear");
    // (zombies are dead, waiting for the host's init to reap them)
    let left = lab
        .ssh(
            "w-1",
            "ps -eo stat=,comm= | awk '$2 == \"kubeadm\" && $1 !~ /Z/' | grep .",
        )
        .expect("ssh");
    assert!(
        !left.status.success(),
        "no kubeadm left running on the node: {}",
        String::from_utf8_lossy(&left.stdout)
    );

    // Twelve checks at once on one node: at most four run together, all succeed (sshd's
    // MaxSessions is 10).
    lab.set_tool_fault("w-1", "crictl", Some("slow:0.5"))
        .expect("fault");
    let cmd = RemoteCommand::Preflight {
        target: v("v1.34.6"),
    };
    let since = lab.calls("w-1").expect("calls").len();
    let w1 = Host::new("w-1");
    let runs = (0..12).map(|_| nodes.run(&w1, &cmd, t));
    let results = futures_util::future::join_all(runs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    lab.set_tool_fault("w-1", "crictl", None).expect("clear");
    let most = max_in_flight(&lab, "w-1", "crictl", since);
    assert!(
        (2..=4).contains(&most),
        "{most} crictl calls at once: {:#?}",
        lab.calls("w-1")
            .expect("calls")
            .iter()
            .skip(since)
            .filter(|c| c.tool == "crictl")
            .map(|c| (c.t, c.exit))
            .collect::<Vec<_>>()
    );

    // A real etcd snapshot: verified by a trial restore, copied off intact, then reused
    // while young.
    let snap = nodes
        .run(
            &Host::new("cp-1"),
            &RemoteCommand::EtcdSnapshot {
                reuse_younger_than_secs: None,
            },
            t,
        )
        .await
        .expect("snapshot");
    let f = &snap.facts;
    assert_eq!(f["reused"], "false");
    assert!(
        f["path"].starts_with("/var/lib/upgraded/etcd/snapshot-"),
        "{f:?}"
    );
    let local = std::fs::read(&f["local_copy"]).expect("local copy");
    assert_eq!(local.len().to_string(), f["size"]);
    let sum = Command::new("sha256sum")
        .arg(&f["local_copy"])
        .output()
        .expect("sha256sum");
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(&f["sha256"]));
    assert!(f["revision"].parse::<u64>().is_ok(), "{f:?}");
    let again = nodes
        .run(
            &Host::new("cp-1"),
            &RemoteCommand::EtcdSnapshot {
                reuse_younger_than_secs: Some(3600),
            },
            t,
        )
        .await
        .expect("fresh enough");
    assert_eq!(again.facts["reused"], "true");
    assert_eq!(again.facts["path"], f["path"]);
    let restore_dir = lab.root.join("restore-check");
    let restored = Command::new("etcdctl")
        .args(["snapshot", "restore", &f["local_copy"], "--data-dir"])
        .arg(&restore_dir)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl");
    assert!(restored.status.success(), "the local copy restores");

    // A crashed node: the next command reconnects once it is back. Until then a read-only
    // command finds the node unreachable (its own outage, retried without using attempts,
    // parked after `gates.nodeReadyTimeout`).
    lab.crash("w-1").expect("crash");
    let e = nodes
        .run(&Host::new("w-1"), &RemoteCommand::InstalledKubelet, t)
        .await
        .expect_err("down");
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.kind, FailureKind::Unreachable, "{e}");
    lab.restart("w-1").expect("restart");
    // The node dies in the middle of a command that changes it: the answer is lost, and
    // the step is in doubt (probed before it is redone), not simply failed.
    lab.set_tool_fault("w-1", "kubeadm", Some("slow:60"))
        .expect("fault");
    let (w1, upgrade) = (
        Host::new("w-1"),
        RemoteCommand::KubeadmUpgrade {
            version: v("v1.34.6"),
            apply: false,
        },
    );
    let (lost, ()) = tokio::join!(nodes.run(&w1, &upgrade, Duration::from_secs(90)), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        lab.crash("w-1").expect("crash mid-command");
    });
    let e = lost.expect_err("the connection went with the node");
    assert_eq!(e.kind, FailureKind::InDoubt, "{e}");
    assert!(e.what.contains("w-1"), "{e}");
    lab.set_tool_fault("w-1", "kubeadm", None).expect("clear");
    lab.restart("w-1").expect("restart");
    let back = nodes
        .run(&Host::new("w-1"), &RemoteCommand::InstalledKubelet, t)
        .await
        .expect("reconnected");
    assert_eq!(back.facts["installed"], "v1.34.6");

    // A frozen node fails in-flight commands within seconds, in words a person understands.
    lab.freeze("cp-1", true).expect("freeze");
    let started = Instant::now();
    let e = nodes
        .run(
            &Host::new("cp-1"),
            &RemoteCommand::InstalledKubelet,
            Duration::from_secs(5),
        )
        .await
        .expect_err("frozen");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert!(e.is_retryable() && e.what.contains("cp-1"), "{e}");
    assert_eq!(e.kind, FailureKind::Unreachable, "a read-only command: {e}");
    assert!(!e.what.contains("multiplex server"), "{e}");
    lab.freeze("cp-1", false).expect("thaw");
    nodes
        .run(&Host::new("cp-1"), &RemoteCommand::InstalledKubelet, t)
        .await
        .expect("answers after the thaw");

    // Strict host keys: another node's key for w-1 is refused, not trusted.
    let wrong = lab.root.join("wrong_known_hosts");
    let cp_key = std::fs::read_to_string(lab.node("cp-1").expect("cp-1").dir.join("host_key.pub"))
        .expect("key");
    let w1 = lab.node("w-1").expect("w-1").addr;
    let key: Vec<&str> = cp_key.split_whitespace().take(2).collect();
    std::fs::write(&wrong, format!("{w1} {}\n", key.join(" "))).expect("write");
    let mut strict = o.clone();
    strict.known_hosts = Some(wrong);
    strict.control_root = lab.root.join("ssh2");
    let strict_nodes = SshNodes::new(strict, Scripts::of(&policy)).expect("adapter");
    let e = strict_nodes
        .run(&Host::new("w-1"), &RemoteCommand::InstalledKubelet, t)
        .await
        .expect_err("refused");
    assert!(!e.is_retryable() && e.what.contains("host key"), "{e}");

    // Masters: closed with the adapter; when the adapter is dropped without a close (as by a
    // kill -9), they idle out by themselves.
    let dir = nodes.control_dir().to_path_buf();
    assert!(!masters_under(&dir).is_empty(), "masters are running");
    std::mem::forget(nodes);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !masters_under(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "masters still running: {:?}",
            masters_under(&dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    strict_nodes.close().await;
    assert!(!strict_nodes.control_dir().exists());

    lab.teardown();
    assert_eq!(leftovers(&id), Vec::<String>::new());
}
