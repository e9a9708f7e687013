//! The operator guide's hands-on exercise, typed as the guide types it, against the `kind`
//! scenario (the guide's `upgrade-lab` cluster): a Deployment of three nginx pods, a budget of
//! two, a drain that must wait for the budget, uncordon.

use std::io::BufReader;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// `kubectl get pods -l app=nginx -w` in the background, its events decoded as they come: the
/// number of nginx pods Ready (and not terminating) after each one.
struct Watch {
    child: Child,
    ready: mpsc::Receiver<usize>,
    reader: Option<std::thread::JoinHandle<usize>>,
    seen: Vec<usize>,
}

impl Watch {
    fn start(env: &Env) -> Watch {
        let mut child = env
            .command(&[
                "get",
                "pods",
                "-l",
                "app=nginx",
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, ready) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut pods: std::collections::BTreeMap<String, bool> = Default::default();
            let mut events = 0;
            let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in stream.into_iter::<Value>() {
                let Ok(event) = event else { break };
                events += 1;
                let pod = &event["object"];
                let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
                match event["type"].as_str() {
                    Some("DELETED") => {
                        pods.remove(&name);
                    }
                    Some("ADDED" | "MODIFIED") => {
                        pods.insert(name, is_ready(pod));
                    }
                    other => panic!("unexpected watch event {other:?}: {event}"),
                }
                if tx.send(pods.values().filter(|r| **r).count()).is_err() {
                    break;
                }
            }
            events
        });
        Watch {
            child,
            ready,
            reader: Some(reader),
            seen: Vec::new(),
        }
    }

    /// Waits until the watch has shown `n` pods Ready.
    fn until_ready(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        self.seen.extend(self.ready.try_iter());
        while self.seen.last() != Some(&n) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ready.recv_timeout(left) {
                Ok(count) => self.seen.push(count),
                Err(e) => panic!(
                    "the watch never showed {n} Ready ({e}); saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Stops kubectl; returns every count it showed and how many events it decoded.
    fn stop(mut self) -> (Vec<usize>, usize) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let events = self
            .reader
            .take()
            .map(|r| r.join().expect("the reader does not panic"))
            .unwrap_or(0);
        self.seen.extend(self.ready.try_iter());
        (self.seen, events)
    }
}

/// Ready as a budget counts it: the Ready condition is True and deletion has not begun.
fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The nodes the nginx pods run on, as `kubectl get pods -o json` says.
fn nginx_nodes(env: &Env) -> Vec<String> {
    let out = env.ok(&["get", "pods", "-l", "app=nginx", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("a PodList");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_guides_exercise_runs_verbatim_on_the_kind_scenario() {
    for k in kubectls() {
        let env = Env::of("kind", &k);
        let nodes = env.ok(&["get", "nodes"]);
        for name in [
            "upgrade-lab-control-plane",
            "upgrade-lab-worker",
            "upgrade-lab-worker2",
        ] {
            let line = nodes
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} listed: {nodes}"));
            assert!(
                line.contains(" Ready ") && line.contains("v1.34.0"),
                "{line}"
            );
        }
        let taints = env.ok(&[
            "get",
            "node",
            "upgrade-lab-control-plane",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ]);
        assert_eq!(taints, "node-role.kubernetes.io/control-plane");

        // 1. The deployment and its budget.
        let out = env.ok(&[
            "create",
            "deployment",
            "nginx",
            "--image=nginx",
            "--replicas=3",
        ]);
        assert_eq!(out.trim(), "deployment.apps/nginx created");
        let out = env.ok(&[
            "create",
            "pdb",
            "nginx-pdb",
            "--selector=app=nginx",
            "--min-available=2",
        ]);
        assert_eq!(out.trim(), "poddisruptionbudget.policy/nginx-pdb created");
        // A Secret (Helm keeps its releases in them): data base64 as the apiserver shows it,
        // listed by label, its table's columns.
        let out = env.ok(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=s3cret",
        ]);
        assert_eq!(out.trim(), "secret/db created");
        let got = env.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
        assert_eq!(got, "czNjcmV0");
        env.ok(&["label", "secret", "db", "owner=helm"]);
        let listed = env.ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"]);
        assert_eq!(listed.trim(), "secret/db");
        let table = env.ok(&["get", "secrets", "db"]);
        assert!(
            table.contains("TYPE") && table.contains("Opaque") && table.contains(" 1 "),
            "{table}"
        );
        env.ok(&["delete", "secret", "db"]);

        // 2. Rollout status follows the Deployment through a watch until it is available.
        let out = env.ok(&["rollout", "status", "deployment/nginx", "--timeout=60s"]);
        assert!(
            out.contains("deployment \"nginx\" successfully rolled out"),
            "{out}"
        );

        // 3. The budget allows one disruption.
        let out = env.ok(&["get", "pdb", "-o", "wide"]);
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .expect("a header")
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "MIN AVAILABLE",
                "MAX UNAVAILABLE",
                "ALLOWED DISRUPTIONS",
                "AGE"
            ],
            "{out}"
        );
        let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
        assert_eq!(row[..4], ["nginx-pdb", "2", "N/A", "1"], "{out}");

        // 4. Drain the worker that runs two of the three: its second eviction must wait for a
        // replacement to be Ready, and the watch must never see fewer than two Ready.
        let on = nginx_nodes(&env);
        assert_eq!(on.len(), 3);
        assert!(
            on.iter().all(|n| n != "upgrade-lab-control-plane"),
            "the taint keeps nginx off the control plane: {on:?}"
        );
        let node = ["upgrade-lab-worker", "upgrade-lab-worker2"]
            .into_iter()
            .find(|n| on.iter().filter(|o| o == n).count() == 2)
            .unwrap_or_else(|| panic!("one worker runs two nginx pods: {on:?}"));
        let mut watch = Watch::start(&env);
        watch.until_ready(3);
        let out = env.run(&[
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains(&format!("node/{node} drained")), "{stdout}");
        assert!(
            stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
            "the budget held the second eviction: {stderr}"
        );
        assert!(
            stderr.contains("Warning: ignoring DaemonSet-managed Pods: kube-system/kindnet-"),
            "{stderr}"
        );
        let evicted = stdout
            .lines()
            .filter(|l| l.starts_with("pod/nginx-") && l.ends_with(" evicted"))
            .count();
        assert_eq!(evicted, 2, "{stdout}");
        watch.until_ready(3);
        let (seen, events) = watch.stop();
        let from_three = seen.iter().position(|n| *n == 3).expect("three were Ready");
        let low = seen[from_three..].iter().min().copied().unwrap_or(0);
        assert!(
            low >= 2,
            "{} had fewer than 2 nginx pods Ready during the drain: {seen:?}",
            k.display()
        );
        assert!(
            seen[from_three..].contains(&2),
            "the watch saw the budget at its minimum: {seen:?}"
        );
        assert!(
            events >= 8,
            "3 listed, 2 terminating, 2 replacements: {events}"
        );

        // 5. Uncordon; the pods run on the other worker now.
        let out = env.ok(&["uncordon", node]);
        assert_eq!(out.trim(), format!("node/{node} uncordoned"));
        let out = env.ok(&["get", "pods", "-o", "wide"]);
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("nginx-")).collect();
        assert!(out.starts_with("NAME "), "{out}");
        let running: Vec<&&str> = rows
            .iter()
            .filter(|l| l.contains(" Running ") && l.contains(" 1/1 "))
            .collect();
        assert_eq!(running.len(), 3, "{out}");
        assert!(
            running.iter().all(|l| !l.contains(&format!(" {node} "))),
            "{out}"
        );
        let w = env.server.sim.world();
        assert!(!w.nodes[node].unschedulable);
    }
}
