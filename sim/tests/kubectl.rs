//! Fidelity of the sim's API, checked with programs nobody here wrote: the real kubectl 1.32
//! and 1.33 (from the folder `/usr/bin/kubectl` points into) run get, cordon, drain, uncordon
//! and scale against the seed scenario and must see what a real cluster gives them; the guide's
//! exercise and inspection commands run against the kind scenario (`exercise`, `inspect`).
//!
//! kubectl is on every machine of ours; its absence is a failure, never a skip.

#[path = "kubectl/exercise.rs"]
mod exercise;
#[path = "kubectl/inspect.rs"]
mod inspect;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use upgraded_sim::model::PodPhase;
use upgraded_sim::{Clock, SimServer, scenario};

/// The kubectl binaries under test: `kubectl.1.32` and `kubectl.1.33` next to the real
/// `/usr/bin/kubectl` (a dispatcher that would pick a version by itself).
fn kubectls() -> Vec<PathBuf> {
    let dispatcher = std::fs::canonicalize("/usr/bin/kubectl")
        .expect("kubectl must be installed at /usr/bin/kubectl on every machine of ours");
    let dir = dispatcher
        .parent()
        .expect("kubectl lives in a folder")
        .to_path_buf();
    ["kubectl.1.32", "kubectl.1.33"]
        .iter()
        .map(|n| {
            let p = dir.join(n);
            assert!(p.exists(), "{} is missing", p.display());
            p
        })
        .collect()
}

/// A seed-scenario sim on loopback plus a private kubeconfig and discovery cache.
struct Env {
    server: SimServer,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Env {
    fn new(kubectl: &Path) -> Env {
        Env::of("seed", kubectl)
    }

    fn of(name: &str, kubectl: &Path) -> Env {
        let world = scenario::build(name, Clock::real(1.0), 7).expect("the scenario builds");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let server = SimServer::start(world, addr).expect("the sim serves on loopback");
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(
            dir.path().join("kubeconfig"),
            upgraded_sim::kubeconfig(&server.url()),
        )
        .expect("kubeconfig written");
        Env {
            server,
            dir,
            kubectl: kubectl.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
    }

    /// Runs kubectl and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}\n{}",
            self.kubectl.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pods on a node that a drain evicts (not DaemonSet, not mirror).
    fn evictable_on(&self, node: &str) -> Vec<String> {
        let w = self.server.sim.world();
        w.pods_on(node)
            .filter(|p| !p.is_daemonset() && !p.is_mirror() && p.deleting_at.is_none())
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    /// A worker hosting a pod of `app` and no pod without a controller.
    fn node_with(&self, app: &str) -> String {
        let w = self.server.sim.world();
        w.pods
            .values()
            .filter(|p| p.spec.labels.get("app").map(String::as_str) == Some(app))
            .filter_map(|p| p.node.clone())
            .find(|n| !n.starts_with("cp-") && w.pods_on(n).all(|p| p.owner.is_some()))
            .unwrap_or_else(|| panic!("no worker hosts {app} without bare pods"))
    }
}

fn for_each_kubectl(f: impl Fn(&Env)) {
    for k in kubectls() {
        let env = Env::new(&k);
        f(&env);
    }
}

#[test]
fn get_nodes_wide_shows_the_clusters_columns() {
    for_each_kubectl(|env| {
        let out = env.ok(&["get", "nodes", "-o", "wide"]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("NAME")
                && lines[0].contains("STATUS")
                && lines[0].contains("ROLES")
                && lines[0].contains("VERSION")
                && lines[0].contains("INTERNAL-IP")
                && lines[0].contains("CONTAINER-RUNTIME"),
            "{out}"
        );
        assert_eq!(lines.len(), 16, "15 nodes and a header: {out}");
        let cp = lines
            .iter()
            .find(|l| l.starts_with("cp-1 "))
            .expect("cp-1 listed");
        assert!(
            cp.contains(" Ready ") && cp.contains("control-plane") && cp.contains("v1.32.4"),
            "{cp}"
        );
        assert!(cp.contains("containerd://1.7.24"), "{cp}");
        // JSON output is the real object: kubectl decodes it with its own types.
        let json = env.ok(&["get", "node", "r640-03", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("kubectl printed JSON");
        assert_eq!(v["kind"], "Node");
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], "v1.32.4");
        assert_eq!(
            v["metadata"]["annotations"]["upgraded.dev/cgroup-version"], "v1",
            "r640-03 is the cgroup v1 node"
        );
        // Selectors are honoured server-side.
        let workers = env.ok(&[
            "get",
            "nodes",
            "-l",
            "node.kubernetes.io/instance-type=hp-dl380",
            "-o",
            "name",
        ]);
        assert_eq!(workers.lines().count(), 3, "{workers}");
        let on = env.ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=r740-02",
            "-o",
            "name",
        ]);
        let expected = env.server.sim.world().pods_on("r740-02").count();
        assert_eq!(on.lines().count(), expected, "{on}");
    });
}

#[test]
fn cordon_and_uncordon_flip_unschedulable() {
    for_each_kubectl(|env| {
        let out = env.ok(&["cordon", "r740-03"]);
        assert!(out.contains("node/r740-03 cordoned"), "{out}");
        assert!(env.server.sim.world().nodes["r740-03"].unschedulable);
        let get = env.ok(&["get", "node", "r740-03"]);
        assert!(get.contains("Ready,SchedulingDisabled"), "{get}");
        let again = env.ok(&["cordon", "r740-03"]);
        assert!(again.contains("already cordoned"), "{again}");
        let out = env.ok(&["uncordon", "r740-03"]);
        assert!(out.contains("node/r740-03 uncordoned"), "{out}");
        assert!(!env.server.sim.world().nodes["r740-03"].unschedulable);
    });
}

#[test]
fn drain_evicts_and_pods_reschedule_elsewhere() {
    for_each_kubectl(|env| {
        let node = env.node_with("web");
        let before = env.evictable_on(&node);
        assert!(!before.is_empty());
        let pods_before = env.server.sim.world().pods.len();
        let out = env.ok(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ]);
        assert!(out.contains(&format!("node/{node} drained")), "{out}");
        assert!(env.evictable_on(&node).is_empty(), "{node} still runs pods");
        let w = env.server.sim.world();
        assert!(w.nodes[&node].unschedulable, "drain cordons first");
        // Every evicted pod was replaced and placed on another node (the seed has room).
        assert_eq!(w.pods.len(), pods_before, "replacements exist");
        let pending: Vec<_> = w
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| &p.name)
            .collect();
        assert!(pending.is_empty(), "pending after drain: {pending:?}");
        assert!(w.pods.values().all(|p| p.phase == PodPhase::Running));
        // DaemonSet pods stay.
        assert!(w.pods_on(&node).any(|p| p.is_daemonset()));
    });
}

#[test]
fn drain_blocked_by_a_pdb_retries_then_times_out_with_kubectls_error() {
    for_each_kubectl(|env| {
        let node = env.node_with("redis");
        env.server
            .sim
            .world()
            .faults
            .blocking_pdbs
            .insert("prod/redis".into());
        let out = env.run(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=7s",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a blocked drain fails");
        assert!(
            stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
            "{stderr}"
        );
        assert!(
            stderr.contains("(will retry after 5s)"),
            "kubectl retried: {stderr}"
        );
        assert!(stderr.contains("global timeout reached: 7s"), "{stderr}");
        let left = env.evictable_on(&node);
        assert_eq!(left.len(), 1, "only the redis pod stays: {left:?}");
        assert!(left[0].starts_with("prod/redis-"), "{left:?}");
    });
}

#[test]
fn drain_refuses_unmanaged_pods_and_local_storage_without_consent() {
    for_each_kubectl(|env| {
        let bare = {
            let w = env.server.sim.world();
            w.pods
                .get(&("default".to_string(), "debug-shell".to_string()))
                .and_then(|p| p.node.clone())
                .expect("debug-shell is scheduled")
        };
        let before = env.evictable_on(&bare);
        let out = env.run(&[
            "drain",
            &bare,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=20s",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(
                "Pods that declare no controller (use --force to override): default/debug-shell"
            ),
            "{stderr}"
        );
        assert_eq!(
            env.evictable_on(&bare),
            before,
            "nothing evicted after a refusal"
        );

        let scratch = env.node_with("batch");
        let out = env.run(&["drain", &scratch, "--ignore-daemonsets", "--timeout=20s"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("(use --delete-emptydir-data to override)"),
            "{stderr}"
        );
        let out = env.run(&["drain", "cp-1", "--timeout=20s"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"),
            "{stderr}"
        );
    });
}

#[test]
fn scale_goes_through_the_scale_subresource() {
    for_each_kubectl(|env| {
        let out = env.ok(&["scale", "-n", "prod", "deployment/redis", "--replicas=4"]);
        assert!(out.contains("scaled"), "{out}");
        let w = env.server.sim.world();
        let redis = w
            .workloads
            .values()
            .find(|d| d.name == "redis")
            .expect("redis exists");
        assert_eq!(redis.replicas, 4);
        assert_eq!(w.current_replicas(redis), 4);
        drop(w);
        let pdb = env.ok(&["get", "pdb", "-n", "prod", "redis", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&pdb).expect("JSON");
        assert_eq!(v["status"]["expectedPods"], 4);
        assert_eq!(v["status"]["desiredHealthy"], 2);
        // A PUT with a stale resourceVersion is a conflict (optimistic concurrency).
        let uri = "/apis/apps/v1/namespaces/prod/deployments/redis/scale";
        let scale: serde_json::Value =
            serde_json::from_str(&env.ok(&["get", "--raw", uri])).expect("Scale JSON");
        let mut stale = scale.clone();
        stale["metadata"]["resourceVersion"] = "1".into();
        stale["spec"]["replicas"] = 5.into();
        let file = env.dir.path().join("scale.json");
        std::fs::write(&file, stale.to_string()).expect("write");
        let path = file.to_str().expect("utf-8 path");
        let out = env.run(&["replace", "--raw", uri, "-f", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("the object has been modified"), "{stderr}");
        let mut fresh = scale;
        fresh["spec"]["replicas"] = 3.into();
        std::fs::write(&file, fresh.to_string()).expect("write");
        env.ok(&["replace", "--raw", uri, "-f", path]);
        let w = env.server.sim.world();
        let redis = w.workloads.values().find(|d| d.name == "redis");
        assert_eq!(redis.map(|d| d.replicas), Some(3));
    });
}

#[test]
fn injected_api_errors_reach_kubectl_as_the_apiserver_would_send_them() {
    for_each_kubectl(|env| {
        env.server
            .sim
            .add_api_fault(upgraded_sim::server::ApiFault {
                method: Some("GET".into()),
                path_contains: "/api/v1/nodes".into(),
                status: 500,
                delay_ms: 0,
                remaining: 1,
            });
        let out = env.run(&["get", "nodes"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("Error from server (InternalError)"),
            "{stderr}"
        );
        assert!(stderr.contains("injected fault"), "{stderr}");
        // The fault was used up: the next call works.
        env.ok(&["get", "nodes"]);
    });
}
