//! The lab: "bare-metal nodes" made of network namespaces on a private bridge, each with its own
//! `/etc`, `/var`, `/root` (overlays in the node's own mount namespace), a real `sshd` (key
//! only, host keys known to the client), the `labstub` tools in place of kubeadm/kubelet/apt…,
//! and on control-plane nodes a real `etcd`: one cluster of every control-plane node, each
//! member run like a static pod while its manifest is in `/etc/kubernetes/manifests`.
//!
//! Needs root. Everything lives under `/run/upgraded-lab/<id>/` and in names carrying `<id>`;
//! [`Lab::teardown`] (also on drop, so a failing test cleans up) kills the nodes' processes,
//! deletes namespaces and links and removes the directory; [`leftovers`] proves it. Labs left
//! by a killed test process are swept when the next lab starts.
//!
//! Nothing leaves the machine: the subnet exists only on the bridge, with no forwarding and no
//! default route inside the nodes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;

/// Where every lab lives (not under /tmp: nodes get a private /tmp).
pub const LAB_ROOT: &str = "/run/upgraded-lab";

/// Every lab node's `/var/lib/kubelet/config.yaml` at boot.
pub const LAB_KUBELET_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n";

/// The tools the stub stands in for.
pub const STUB_TOOLS: &[&str] = &[
    "kubeadm",
    "kubelet",
    "kubectl",
    "apt-get",
    "apt-mark",
    "apt-cache",
    "dpkg-query",
    "dnf",
    "systemctl",
    "crictl",
    "curl",
];

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, mounts, sshd)")]
    NotRoot,
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("node {0:?} is not in this lab")]
    NoSuchNode(String),
    #[error("{0}")]
    Timeout(String),
}

/// A node to create.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub control_plane: bool,
}

/// What a lab starts with on every node.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub nodes: Vec<NodeSpec>,
    /// The Kubernetes version the packages are at (`1.33.5`).
    pub version: (u16, u16, u16),
    /// The `labstub` binary.
    pub stub: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LabNode {
    pub name: String,
    pub control_plane: bool,
    pub netns: String,
    /// The host side of the node's veth pair (partitions set it down).
    pub veth: String,
    pub addr: Ipv4Addr,
    /// `/run/upgraded-lab/<id>/<index>`.
    pub dir: PathBuf,
}

impl LabNode {
    /// The node's control directory, `/var/lib/lab` inside it: stub state, call log, faults.
    pub fn ctl(&self) -> PathBuf {
        self.dir.join("ctl")
    }
}

/// One recorded stub call.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Call {
    pub t: u64,
    pub node: String,
    pub tool: String,
    pub args: Vec<String>,
    pub exit: i32,
    #[serde(default)]
    pub note: String,
}

impl Call {
    /// `tool arg arg…`
    pub fn line(&self) -> String {
        std::iter::once(self.tool.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug)]
pub struct Lab {
    pub id: String,
    pub root: PathBuf,
    pub bridge: String,
    pub host_addr: Ipv4Addr,
    pub nodes: Vec<LabNode>,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    spec: LabSpec,
    torn_down: bool,
}

fn run(what: &str, cmd: &mut Command) -> Result<Output, LabError> {
    let out = cmd.output().map_err(|e| LabError::Command {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            what: what.to_string(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output, LabError> {
    run(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Third octet of 10.254.X.0/24 not used by any address on this machine.
fn free_subnet() -> Result<u8, LabError> {
    let out = ip(&["-o", "-4", "addr", "show"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rng = rand::rng();
    for _ in 0..200 {
        let x: u8 = rng.random_range(1..=250);
        if !text.contains(&format!("10.254.{x}.")) {
            return Ok(x);
        }
    }
    Err(LabError::Command {
        what: "choosing a subnet".into(),
        detail: "every 10.254.X.0/24 is in use".into(),
    })
}

impl Lab {
    /// Creates the bridge, the nodes' namespaces, keys and directories, and boots every node.
    pub fn start(spec: LabSpec) -> Result<Lab, LabError> {
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        sweep_stale();
        let id: String = {
            let mut rng = rand::rng();
            (0..6)
                .map(|_| {
                    let d: u32 = rng.random_range(0..16);
                    char::from_digit(d, 16).unwrap_or('0')
                })
                .collect()
        };
        let root = Path::new(LAB_ROOT).join(&id);
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("owner"), std::process::id().to_string())?;
        let subnet = free_subnet()?;
        let bridge = format!("ulb{id}");
        let host_addr = Ipv4Addr::new(10, 254, subnet, 1);
        let mut lab = Lab {
            id: id.clone(),
            root: root.clone(),
            bridge: bridge.clone(),
            host_addr,
            nodes: vec![],
            client_key: root.join("client_key"),
            known_hosts: root.join("known_hosts"),
            spec: spec.clone(),
            torn_down: false,
        };
        // From here on, a failure tears down what exists (drop).
        lab.record_manifest()?;
        // The stub tools, where every node sees them: a node mounts its own /tmp, so a
        // build under /tmp (a CI target dir) would be invisible inside it.
        let stub = root.join("labstub");
        std::fs::copy(&spec.stub, &stub)?;
        lab.spec.stub = stub;
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{host_addr}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        keygen(&lab.client_key)?;
        let mut known = String::new();
        for (i, n) in spec.nodes.iter().enumerate() {
            let node = LabNode {
                name: n.name.clone(),
                control_plane: n.control_plane,
                netns: format!("ul-{id}-{i}"),
                veth: format!("ul{id}h{i}"),
                addr: Ipv4Addr::new(10, 254, subnet, 10 + i as u8),
                dir: root.join(i.to_string()),
            };
            lab.nodes.push(node.clone());
            lab.record_manifest()?;
            lab.create_node(&node)?;
            let pubkey = std::fs::read_to_string(node.dir.join("host_key.pub"))?;
            let mut parts = pubkey.split_whitespace();
            let (kind, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let _ = writeln!(known, "{} {kind} {key}", node.addr);
        }
        std::fs::write(&lab.known_hosts, known)?;
        for node in lab.nodes.clone() {
            lab.boot(&node)?;
        }
        // Generous: on a loaded 2-core machine several labs boot at once.
        for node in lab.nodes.clone() {
            lab.wait_ssh(&node, Duration::from_secs(30))?;
        }
        Ok(lab)
    }

    /// Names of everything created, for the sweep of labs whose test process died.
    fn record_manifest(&self) -> Result<(), LabError> {
        let mut m = format!("bridge {}\n", self.bridge);
        for n in &self.nodes {
            let _ = writeln!(m, "netns {}", n.netns);
        }
        std::fs::write(self.root.join("manifest"), m)?;
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&LabNode, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::NoSuchNode(name.to_string()))
    }

    fn create_node(&self, n: &LabNode) -> Result<(), LabError> {
        for d in [
            "etc.up",
            "etc.wk",
            "var.up",
            "var.wk",
            "root.up",
            "root.wk",
            "ctl/faults",
        ] {
            std::fs::create_dir_all(n.dir.join(d))?;
        }
        // The node's own files, written into the overlays' upper layers before they are mounted.
        let (ma, mi, pa) = self.spec.version;
        let etc = n.dir.join("etc.up");
        std::fs::create_dir_all(etc.join("apt/sources.list.d"))?;
        std::fs::write(
            etc.join("apt/sources.list.d/kubernetes.list"),
            format!(
                "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v{ma}.{mi}/deb/ /\n"
            ),
        )?;
        // The kubelet config a preflight copies before the node is touched.
        let var = n.dir.join("var.up");
        std::fs::create_dir_all(var.join("lib/kubelet"))?;
        std::fs::write(var.join("lib/kubelet/config.yaml"), LAB_KUBELET_CONFIG)?;
        std::fs::create_dir_all(etc.join("kubernetes/manifests"))?;
        std::fs::write(
            etc.join("kubernetes/kubelet.conf"),
            "# lab kubelet kubeconfig\n",
        )?;
        if n.control_plane {
            for c in [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "etcd",
            ] {
                std::fs::write(
                    etc.join(format!("kubernetes/manifests/{c}.yaml")),
                    format!(
                        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {c}\n  namespace: kube-system\nspec:\n  containers:\n  - name: {c}\n    image: registry.k8s.io/{c}:v{ma}.{mi}.{pa}\n"
                    ),
                )?;
            }
            for c in [
                "admin.conf",
                "controller-manager.conf",
                "scheduler.conf",
                "super-admin.conf",
            ] {
                std::fs::write(etc.join(format!("kubernetes/{c}")), format!("# lab {c}\n"))?;
            }
            std::fs::write(n.ctl().join("control-plane"), "")?;
        }
        std::fs::write(n.dir.join("root.up/.bashrc"), "# lab node\n")?;
        std::fs::write(n.dir.join("root.up/.profile"), "# lab node\n")?;
        let pkg = format!("{ma}.{mi}.{pa}-1.1");
        let state = serde_json::json!({
            "packages": {"kubeadm": pkg, "kubelet": pkg, "kubectl": pkg},
            "holds": ["kubeadm", "kubectl", "kubelet"],
            "kubelet_running": format!("v{ma}.{mi}.{pa}"),
        });
        std::fs::write(n.ctl().join("state.json"), state.to_string())?;
        keygen(&n.dir.join("host_key"))?;
        let client_pub = std::fs::read_to_string(self.client_key.with_extension("pub"))?;
        std::fs::write(n.dir.join("authorized_keys"), client_pub)?;
        let config = format!(
            "Port 22\nListenAddress {addr}\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nMaxSessions 10\n\
             PrintMotd no\nSetEnv LAB_NODE={name} LAB_CTL=/var/lib/lab\n",
            addr = n.addr,
            dir = n.dir.display(),
            name = n.name,
        );
        std::fs::write(n.dir.join("sshd_config"), config)?;
        // Network: a namespace with loopback and one veth on the bridge, no default route.
        ip(&["netns", "add", &n.netns])?;
        let peer = format!(
            "ul{}p{}",
            self.id,
            n.dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        ip(&[
            "link", "add", &n.veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &n.netns])?;
        ip(&["link", "set", &n.veth, "master", &self.bridge])?;
        ip(&["link", "set", &n.veth, "up"])?;
        let inside = |args: &[&str]| -> Result<Output, LabError> {
            let mut full = vec!["netns", "exec", n.netns.as_str(), "ip"];
            full.extend_from_slice(args);
            ip(&full)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["link", "set", &peer, "name", "eth0"])?;
        inside(&["addr", "add", &format!("{}/24", n.addr), "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// The node's boot script: mounts (private to the node), stubs, etcd, then sshd.
    fn boot_script(&self, n: &LabNode) -> String {
        let d = n.dir.display();
        let stub = self.spec.stub.display();
        let mut s = String::from("set -e\n");
        for m in ["etc", "var", "root"] {
            let _ = writeln!(
                s,
                "mount -t overlay overlay -o lowerdir=/{m},upperdir={d}/{m}.up,workdir={d}/{m}.wk /{m}"
            );
        }
        s.push_str("mount -t tmpfs -o mode=1777 tmpfs /tmp\n");
        // `ip netns exec` gives the node a fresh /sys: a unified (v2) cgroup hierarchy, as
        // kubelet 1.35 requires, whatever the host runs.
        s.push_str("mount -t cgroup2 none /sys/fs/cgroup\n");
        let _ = writeln!(
            s,
            "mkdir -p /var/lib/lab && mount --bind {d}/ctl /var/lib/lab"
        );
        s.push_str("mount -t tmpfs tmpfs /usr/local/bin\n");
        for t in STUB_TOOLS {
            let _ = writeln!(s, "ln -s {stub} /usr/local/bin/{t}");
            // Absolute paths must not reach the host's real tools either.
            let _ = writeln!(
                s,
                "for p in /usr/bin/{t} /bin/{t} /usr/sbin/{t}; do if [ -e \"$p\" ]; then mount --bind /usr/local/bin/{t} \"$p\"; fi; done"
            );
        }
        if n.control_plane {
            s.push_str(&self.etcd_static_pod(n));
        }
        s.push_str("mkdir -p /run/sshd\n");
        let _ = writeln!(s, "exec /usr/sbin/sshd -D -e -f {d}/sshd_config");
        s
    }

    /// The member of the lab's etcd cluster (every control-plane node, named after its node,
    /// on its own address), run as kubelet runs a static pod: while
    /// `/etc/kubernetes/manifests/etcd.yaml` is there it runs (started again when it dies),
    /// once the manifest is moved out it is stopped. The pid is in `/var/lib/lab/etcd.pid`,
    /// which the `crictl ps` stub reads. A restored data dir holds its own membership, so
    /// the `--initial-*` flags only matter on the first start, as in kubeadm's manifest.
    fn etcd_static_pod(&self, n: &LabNode) -> String {
        let cluster = self
            .nodes
            .iter()
            .filter(|m| m.control_plane)
            .map(|m| format!("{}=http://{}:2380", m.name, m.addr))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "mkdir -p /var/lib/etcd /var/log\n\
             alive() {{ [ -r \"/proc/$1/stat\" ] && [ \"$(cut -d ' ' -f 3 \"/proc/$1/stat\")\" != Z ]; }}\n\
             lab_etcd() {{\n  while :; do\n    pid=$(cat /var/lib/lab/etcd.pid 2>/dev/null || true)\n    \
             if [ -e /etc/kubernetes/manifests/etcd.yaml ]; then\n      \
             if [ -z \"$pid\" ] || ! alive \"$pid\"; then\n        \
             etcd --name {name} --data-dir /var/lib/etcd \
             --listen-client-urls http://{addr}:2379,http://127.0.0.1:2379 --advertise-client-urls http://{addr}:2379 \
             --listen-peer-urls http://{addr}:2380 --initial-advertise-peer-urls http://{addr}:2380 \
             --initial-cluster {cluster} --initial-cluster-token lab-{id} --initial-cluster-state new \
             >>/var/log/etcd.log 2>&1 &\n        echo $! > /var/lib/lab/etcd.pid\n      fi\n    \
             elif [ -n \"$pid\" ] && alive \"$pid\"; then\n      \
             kill \"$pid\"; wait \"$pid\" 2>/dev/null || true\n      rm -f /var/lib/lab/etcd.pid\n    fi\n    \
             sleep 0.2\n  done\n}}\n\
             lab_etcd </dev/null >/dev/null 2>&1 &\n",
            name = n.name,
            addr = n.addr,
            id = self.id,
        )
    }

    /// Starts the node's processes (again, after a crash).
    pub fn boot(&self, n: &LabNode) -> Result<(), LabError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("boot.log"))?;
        Command::new("setsid")
            .args([
                "ip",
                "netns",
                "exec",
                &n.netns,
                "sh",
                "-c",
                &self.boot_script(n),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(())
    }

    /// Waits until the node answers over SSH.
    pub fn wait_ssh(&self, n: &LabNode, limit: Duration) -> Result<(), LabError> {
        let start = Instant::now();
        loop {
            let last = match self.ssh(&n.name, "true") {
                Ok(o) if o.status.success() => return Ok(()),
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > limit {
                let log = std::fs::read_to_string(n.dir.join("boot.log")).unwrap_or_default();
                return Err(LabError::Timeout(format!(
                    "node {} did not answer over SSH within {limit:?}; last ssh error: {last}; \
                     boot log:\n{log}",
                    n.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client options: this lab's key, strict checking against this lab's known hosts,
    /// nothing from the user's ssh config.
    pub fn ssh_args(&self, addr: Ipv4Addr, connect_timeout_s: u32) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={connect_timeout_s}"),
            "-o".into(),
            "ServerAliveInterval=1".into(),
            "-o".into(),
            "ServerAliveCountMax=2".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            format!("root@{addr}"),
        ]
    }

    /// An ssh_config naming every node by its node name (`Host cp-1` → its address), with
    /// this lab's key and known hosts: what an operator's `~/.ssh/config` does for a real
    /// cluster.
    pub fn ssh_config(&self) -> String {
        let mut c = String::new();
        for n in &self.nodes {
            let _ = writeln!(c, "Host {}\n  HostName {}", n.name, n.addr);
        }
        let _ = writeln!(
            c,
            "Host *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  LogLevel ERROR",
            self.client_key.display(),
            self.known_hosts.display()
        );
        c
    }

    /// Runs `command` (a shell command line) on a node as root over SSH.
    pub fn ssh(&self, node: &str, command: &str) -> Result<Output, LabError> {
        let n = self.node(node)?;
        Ok(Command::new("ssh")
            .args(self.ssh_args(n.addr, 2))
            .arg("--")
            .arg(command)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Like [`Lab::ssh`] but insists on exit 0 and returns stdout.
    pub fn ssh_ok(&self, node: &str, command: &str) -> Result<String, LabError> {
        let o = self.ssh(node, command)?;
        if !o.status.success() {
            return Err(LabError::Command {
                what: format!("ssh {node} {command:?}"),
                detail: format!(
                    "{}: {}{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Tells every node's stubs where the sim is.
    pub fn set_sim_url(&self, url: &str) -> Result<(), LabError> {
        for n in &self.nodes {
            std::fs::write(n.ctl().join("sim"), url)?;
        }
        Ok(())
    }

    /// Sets (or with `None` clears) a stub fault: `fail[:CODE]`, `hang`, `slow:SECONDS`, each
    /// optionally followed by a substring the arguments must contain.
    pub fn set_tool_fault(
        &self,
        node: &str,
        tool: &str,
        rule: Option<&str>,
    ) -> Result<(), LabError> {
        let path = self.node(node)?.ctl().join("faults").join(tool);
        match rule {
            Some(r) => std::fs::write(path, format!("{r}\n"))?,
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Every stub call recorded on a node, in order.
    pub fn calls(&self, node: &str) -> Result<Vec<Call>, LabError> {
        let text =
            std::fs::read_to_string(self.node(node)?.ctl().join("calls.jsonl")).unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The stub's package state on a node.
    pub fn packages(&self, node: &str) -> Result<BTreeMap<String, String>, LabError> {
        let text = std::fs::read_to_string(self.node(node)?.ctl().join("state.json"))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LabError::Command {
            what: "reading stub state".into(),
            detail: e.to_string(),
        })?;
        Ok(v["packages"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn pids(&self, n: &LabNode) -> Vec<u32> {
        netns_pids(&n.netns)
    }

    fn signal(&self, n: &LabNode, sig: &str) {
        let pids: Vec<String> = self.pids(n).iter().map(u32::to_string).collect();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .args(&pids)
                .output();
        }
    }

    // ----- faults -------------------------------------------------------------------------------

    /// The machine dies: every process of the node is killed.
    pub fn crash(&self, node: &str) -> Result<(), LabError> {
        let n = self.node(node)?.clone();
        kill_netns(&n.netns);
        Ok(())
    }

    /// Boots a crashed node again; its disks (the overlays' upper layers) survived.
    pub fn restart(&self, node: &str) -> Result<(), LabError> {
        let n = self.node(node)?.clone();
        self.boot(&n)?;
        self.wait_ssh(&n, Duration::from_secs(10))
    }

    /// Cuts the node's cable (or plugs it back).
    pub fn partition(&self, node: &str, cut: bool) -> Result<(), LabError> {
        let n = self.node(node)?;
        ip(&["link", "set", &n.veth, if cut { "down" } else { "up" }])?;
        Ok(())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) every process of the node.
    pub fn freeze(&self, node: &str, frozen: bool) -> Result<(), LabError> {
        let n = self.node(node)?.clone();
        self.signal(&n, if frozen { "STOP" } else { "CONT" });
        Ok(())
    }

    /// Removes everything the lab created. Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        teardown_named(
            &self.root,
            &self.bridge,
            self.nodes.iter().map(|n| n.netns.clone()),
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn keygen(path: &Path) -> Result<(), LabError> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(
        "ssh-keygen",
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "upgraded-lab", "-f"])
            .arg(path),
    )?;
    Ok(())
}

fn netns_pids(netns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGCONT (frozen nodes) and SIGKILL every process in a namespace, until none is left.
fn kill_netns(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<String> = netns_pids(netns).iter().map(u32::to_string).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        let _ = Command::new("kill").arg("-CONT").args(&pids).output();
        let _ = Command::new("kill").arg("-KILL").args(&pids).output();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn teardown_named(root: &Path, bridge: &str, netns: impl Iterator<Item = String>) {
    for ns in netns {
        kill_netns(&ns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    }
    let _ = Command::new("ip").args(["link", "del", bridge]).output();
    // A veth's host end can outlive its namespace for a moment: delete what carries our id.
    if let Some(id) = root.file_name().map(|f| f.to_string_lossy().into_owned()) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let links = links_with(&id);
            if links.is_empty() || Instant::now() > deadline {
                break;
            }
            for l in links {
                let _ = Command::new("ip").args(["link", "del", &l]).output();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Interface names containing `id` (`ulXXXXXXh0@if7` → `ulXXXXXXh0`).
fn links_with(id: &str) -> Vec<String> {
    Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
                .filter(|n| n.contains(id))
                .collect()
        })
        .unwrap_or_default()
}

/// Tears down labs whose owning process is gone (a test killed before its drop ran).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(LAB_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        let root = e.path();
        let owner = std::fs::read_to_string(root.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if owner.is_some_and(pid_alive) {
            continue;
        }
        // A lab another test is starting right now has its directory before its owner file:
        // without an owner, only a directory left for a minute is stale.
        let young = std::fs::metadata(&root)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < std::time::Duration::from_secs(60));
        if owner.is_none() && young {
            continue;
        }
        let manifest = std::fs::read_to_string(root.join("manifest")).unwrap_or_default();
        let mut bridge = String::new();
        let mut netns = vec![];
        for line in manifest.lines() {
            match line.split_once(' ') {
                Some(("bridge", b)) => bridge = b.to_string(),
                Some(("netns", n)) => netns.push(n.to_string()),
                _ => {}
            }
        }
        teardown_named(&root, &bridge, netns.into_iter());
    }
}

/// What is left of lab `id` on this machine: namespaces, links, mounts, processes, files.
/// Empty after a teardown.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut found = vec![];
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if l.contains(id) {
                found.push(format!("netns {l}"));
            }
        }
    }
    for l in links_with(id) {
        found.push(format!("link {l}"));
    }
    let root = format!("{LAB_ROOT}/{id}");
    if let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo")
        && m.contains(&root)
    {
        found.push(format!("mount under {root}"));
    }
    if let Ok(o) = Command::new("pgrep").args(["-af", &root]).output() {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            found.push(format!("process {l}"));
        }
    }
    if Path::new(&root).exists() {
        found.push(format!("directory {root}"));
    }
    found
}
