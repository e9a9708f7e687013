//! The plan for people: a table for the terminal and a Markdown runbook an operator could
//! follow by hand. Every value that reaches a shell command is single-quoted.

use std::fmt::Write as _;

use crate::policy::PackageManager;
use crate::{PlanReport, Severity, Unit};
use upgraded_events::Step;
use upgraded_events::Version;
use upgraded_events::check::Boundary;
use upgraded_events::plan::{EtcdRestoreStage, node_packages};
use upgraded_events::quantity::human_secs;

/// Quotes a word for POSIX shells: `'it'\''s'`. Plain words stay as they are.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/=@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Data as one printable line: control characters (and Unicode line separators) become `?`.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// A name as one quoted shell word on one line: a quoted line break is still a line break to
/// someone pasting a runbook line by line (and no name the apiserver allows contains one).
fn word(s: &str) -> String {
    shell_quote(&one_line(s))
}

/// Text for one Markdown table cell or line, or a `#` comment in a shell block: no pipes,
/// backticks, angle brackets, line breaks or other control characters from data, so nothing
/// from a snapshot can end a comment and become a command.
fn md(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' | '`' | '<' | '>' => ' ',
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => ' ',
            c => c,
        })
        .collect()
}

/// One cell of the terminal table, padded, on one line.
fn pad(s: &str, w: usize) -> String {
    let s = one_line(s);
    let s = s.as_str();
    let n = s.chars().count();
    if n >= w {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

fn short_time(rfc: &str) -> String {
    // 2026-11-24T21:00:00Z → 2026-11-24 21:00
    rfc.get(..16)
        .map(|s| s.replace('T', " "))
        .unwrap_or_default()
}

fn unit_label(u: &Unit) -> String {
    let mut s = one_line(&u.node);
    if u.from != u.to {
        let _ = write!(s, " {}→{}", u.from, u.to);
    }
    if u.stays_cordoned {
        s.push_str(" (stays cordoned)");
    }
    if u.blocked.is_some() {
        s.push_str(" BLOCKED");
    }
    s
}

/// The terminal table: phases, batches, nodes, estimates, findings.
pub fn table(r: &PlanReport) -> String {
    let mut o = String::new();
    let path: Vec<String> = r.path.iter().map(|h| h.version.to_string()).collect();
    let _ = writeln!(
        o,
        "Upgrade plan: control plane {} → {} (path {})",
        r.control_plane_from,
        r.target,
        if path.is_empty() {
            "none: control plane at target".into()
        } else {
            path.join(" → ")
        }
    );
    let gens: Vec<String> = r
        .generations
        .iter()
        .map(|g| {
            format!(
                "{} {} (max {} at once)",
                g.name, g.workers, g.max_unavailable
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "Cluster: {} control-plane node(s), {} worker(s), {} pod(s); generations oldest first: {}",
        r.control_plane_nodes.len(),
        r.workers,
        r.pods,
        if gens.is_empty() {
            "-".into()
        } else {
            gens.join(", ")
        }
    );
    let blockers = r.blockers();
    let warnings = r.findings.len() - blockers;
    if r.nothing_to_do() {
        let _ = writeln!(
            o,
            "Status: nothing to do: the control plane and every kubelet are at {}\n",
            r.target
        );
        return o;
    }
    let _ = writeln!(
        o,
        "Status: {} ({blockers} blocker(s), {warnings} warning(s)); estimate {} of work, {} → {}{}\n",
        if r.blocked { "BLOCKED" } else { "ready" },
        human_secs(r.estimate_secs),
        short_time(&r.start),
        short_time(&r.end),
        if r.fits_windows {
            ""
        } else {
            " (some batches do not fit the windows)"
        }
    );
    let _ = writeln!(
        o,
        "{} {} {} {} NODES",
        pad("BATCH", 6),
        pad("PHASE / LABEL", 44),
        pad("EST", 7),
        pad("START (UTC)", 17),
    );
    for p in &r.phases {
        let _ = writeln!(
            o,
            "{} {} {} {} ",
            pad("", 6),
            pad(&format!("== {} ==", p.name), 44),
            pad(&human_secs(p.estimate_secs), 7),
            pad(&short_time(&p.start), 17),
        );
        for b in &p.batches {
            let nodes: Vec<String> = b.units.iter().map(unit_label).collect();
            let _ = writeln!(
                o,
                "{} {} {} {} {}{}",
                pad(&b.number.to_string(), 6),
                pad(&b.label, 44),
                pad(&human_secs(b.estimate_secs), 7),
                pad(&short_time(&b.start), 17),
                nodes.join(", "),
                if b.fits_window {
                    ""
                } else {
                    "  [outside windows]"
                }
            );
            if let Some(l) = &b.limited_by {
                let _ = writeln!(o, "{} (smaller than maxUnavailable: {l})", pad("", 6));
            }
        }
    }
    if !r.findings.is_empty() {
        let _ = writeln!(o, "\nFINDINGS");
        for f in &r.findings {
            let sev = match f.severity {
                Severity::Blocker => "BLOCKER",
                Severity::Warning => "warning",
            };
            let _ = writeln!(o, "{} {}: {}", pad(sev, 8), f.code, one_line(&f.message));
            if !f.subjects.is_empty() {
                let shown: Vec<String> = f.subjects.iter().take(6).map(|s| one_line(s)).collect();
                let more = f.subjects.len().saturating_sub(6);
                let _ = writeln!(
                    o,
                    "         on: {}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
            let _ = writeln!(o, "         fix: {}", one_line(&f.fix));
        }
    }
    o
}

struct Cmds<'a> {
    r: &'a PlanReport,
    pm: PackageManager,
}

impl Cmds<'_> {
    fn pkg(&self, v: Version) -> String {
        crate::catalog::package_version(&self.r.package_format, v)
    }

    fn repo(&self, v: Version) -> String {
        match self.pm {
            PackageManager::Apt => format!(
                "echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v{}.{}/deb/ /' > /etc/apt/sources.list.d/kubernetes.list\ncurl -fsSL https://pkgs.k8s.io/core:/stable:/v{}.{}/deb/Release.key | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg",
                v.major, v.minor, v.major, v.minor
            ),
            PackageManager::Dnf => format!(
                "sed -i 's|/v[0-9]*\\.[0-9]*/rpm/|/v{}.{}/rpm/|g' /etc/yum.repos.d/kubernetes.repo",
                v.major, v.minor
            ),
        }
    }

    fn install(&self, pkgs: &[&str], v: Version) -> String {
        self.packages(pkgs, v, false)
    }

    /// The rollback's package command: a downgrade of held packages.
    fn downgrade(&self, pkgs: &[&str], v: Version) -> String {
        self.packages(pkgs, v, true)
    }

    fn packages(&self, pkgs: &[&str], v: Version, down: bool) -> String {
        let ver = shell_quote(&self.pkg(v));
        let names = pkgs.join(" ");
        match self.pm {
            PackageManager::Apt => {
                let list: Vec<String> = pkgs.iter().map(|p| format!("{p}={}", ver)).collect();
                let flags = if down {
                    " --allow-downgrades --allow-change-held-packages"
                } else {
                    ""
                };
                format!(
                    "apt-mark unhold {names}\napt-get update && apt-get install -y{flags} {}\napt-mark hold {names}",
                    list.join(" ")
                )
            }
            PackageManager::Dnf => {
                let list: Vec<String> = pkgs.iter().map(|p| format!("{p}-{}", ver)).collect();
                let verb = if down { "downgrade" } else { "install" };
                format!(
                    "dnf {verb} -y {} --disableexcludes=kubernetes",
                    list.join(" ")
                )
            }
        }
    }

    fn step(&self, u: &Unit, s: &Step, drain_timeout: u64) -> String {
        let node = word(&u.node);
        match s {
            Step::Preflight => "# on the node: cgroup v2, disk, container runtime\nstat -fc %T /sys/fs/cgroup   # cgroup2fs\ndf --output=pcent /var/lib/kubelet | tail -1   # below 85%\ncrictl info > /dev/null && echo runtime ok".into(),
            Step::EtcdSnapshot => "ETCDCTL_API=3 etcdctl snapshot save /backup/etcd-pre-upgrade.db \\\n  --endpoints=https://127.0.0.1:2379 \\\n  --cacert=/etc/kubernetes/pki/etcd/ca.crt \\\n  --cert=/etc/kubernetes/pki/etcd/server.crt \\\n  --key=/etc/kubernetes/pki/etcd/server.key\n# verify by a trial restore (status alone does not read every page)\nrm -rf /tmp/etcd-verify && ETCDCTL_API=3 etcdctl snapshot restore /backup/etcd-pre-upgrade.db --data-dir /tmp/etcd-verify && rm -rf /tmp/etcd-verify\ncp -a /etc/kubernetes/manifests /backup/manifests-pre-upgrade\nsha256sum /backup/etcd-pre-upgrade.db".into(),
            Step::KubeadmUpgrade { version, apply } => {
                let mut c = format!("{}\n{}\n", self.repo(*version), self.install(&["kubeadm"], *version));
                if *apply {
                    let _ = write!(c, "kubeadm upgrade plan\nkubeadm upgrade apply {} --yes", shell_quote(&version.to_string()));
                } else {
                    c.push_str("kubeadm upgrade node");
                }
                c
            }
            Step::KubeProxy { version } => format!(
                "kubectl -n kube-system set image daemonset/kube-proxy kube-proxy=registry.k8s.io/kube-proxy:{}",
                shell_quote(&version.to_string())
            ),
            Step::KubeadmDowngrade { version, apply } => {
                let mut c = format!(
                    "{}\n{}\n",
                    self.repo(*version),
                    self.downgrade(&["kubeadm"], *version)
                );
                if *apply {
                    let _ = write!(
                        c,
                        "kubeadm upgrade apply {} --yes   # one minor down; etcd stays at its newer version",
                        shell_quote(&version.to_string())
                    );
                } else {
                    c.push_str("kubeadm upgrade node");
                }
                c
            }
            Step::Cordon => format!("kubectl cordon {node}"),
            Step::Drain => format!(
                "kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --timeout={drain_timeout}s\n# never --force or --disable-eviction: a refusal means a PDB or an unmanaged pod needs a person"
            ),
            Step::UpgradePackages { version } => self.install(node_packages(false), *version),
            Step::DowngradePackages {
                version,
                kubelet_config,
                kubeadm,
            } => {
                let mut c = self.downgrade(node_packages(*kubeadm), *version);
                if let Some(path) = kubelet_config {
                    let _ = write!(
                        c,
                        "\ncp -a {} /var/lib/kubelet/config.yaml   # the kubelet config from before the upgrade",
                        shell_quote(path)
                    );
                }
                c
            }
            Step::RestoreKubeletFiles {
                dir,
                server,
                cri_socket,
                ..
            } => {
                let d = shell_quote(dir);
                let mut c = format!(
                    "# the files kubeadm rewrote, as the preflight kept them\ncp -a {d}/kubeadm-flags.env /var/lib/kubelet/kubeadm-flags.env\nif [ -e {d}/instance-config.yaml ]; then cp -a {d}/instance-config.yaml /var/lib/kubelet/; else rm -f /var/lib/kubelet/instance-config.yaml; fi\nrm -rf /etc/kubernetes/kubelet.conf.d; if [ -d {d}/kubelet.conf.d ]; then cp -a {d}/kubelet.conf.d /etc/kubernetes/; fi"
                );
                if let Some(server) = server {
                    let _ = write!(
                        c,
                        "\nkubectl --kubeconfig /etc/kubernetes/kubelet.conf config set-cluster default-cluster --server={}",
                        shell_quote(server)
                    );
                }
                if let Some(socket) = cri_socket {
                    let _ = write!(
                        c,
                        "\nkubectl annotate node {node} --overwrite kubeadm.alpha.kubernetes.io/cri-socket={}",
                        shell_quote(socket)
                    );
                }
                c
            }
            Step::RestartKubelet => "systemctl daemon-reload\nsystemctl restart kubelet".into(),
            Step::Verify => format!(
                "kubectl wait --for=condition=Ready node/{node} --timeout=600s\nkubectl get node {node} -o jsonpath='{{.status.nodeInfo.kubeletVersion}}'   # {}",
                u.to
            ),
            Step::Uncordon if u.stays_cordoned => format!("# {} was cordoned before the upgrade: leave it cordoned", md(&u.node)),
            Step::Uncordon => format!("kubectl uncordon {node}"),
            Step::Soak => format!(
                "# soak: watch for {} before the next batch\nkubectl get pods -A --field-selector spec.nodeName={node} | grep -v Running\nkubectl get pods -A | grep -c CrashLoopBackOff   # must not rise over the baseline",
                human_secs(self.r.canary_soak_secs)
            ),
            Step::EtcdRestore(stage) => etcd_restore(stage),
            Step::Checks { boundary } if !boundary_checks_node(*boundary) => {
                run_checks(*boundary, u.to, &self.r.generation_label)
            }
            Step::Checks { .. } => format!(
                "# checks while {node} is still cordoned: a probe pod pinned to it (and a hostNetwork one) dials a pod on a node\n# of every other generation, one not yet upgraded and a control-plane node, each of which dials back; it resolves a cluster name\nkubectl create namespace upgraded-checks --dry-run=client -o yaml | kubectl apply -f -\nkubectl -n upgraded-checks run upg-echo --image=registry.k8s.io/e2e-test-images/agnhost:2.53 --overrides='{{\"spec\":{{\"nodeName\":\"OTHER-NODE\",\"tolerations\":[{{\"operator\":\"Exists\"}}]}}}}' -- netexec --http-port=8080\nkubectl -n upgraded-checks get pod upg-echo -o jsonpath='{{.status.podIP}}'\nkubectl -n upgraded-checks expose pod upg-echo --port=8080 && kubectl -n upgraded-checks get service upg-echo -o jsonpath='{{.spec.clusterIP}}'   # SERVICE-IP\nkubectl -n upgraded-checks run upg-net --rm -i --restart=Never --image=registry.k8s.io/e2e-test-images/agnhost:2.53 --overrides='{{\"spec\":{{\"nodeName\":{node_json},\"tolerations\":[{{\"operator\":\"Exists\"}}]}}}}' --command -- sh -c 'nc -z -w 5 ECHO-IP 8080 && curl -s \"http://ECHO-IP:8080/dial?request=hostname&protocol=http&host=OWN-ECHO-IP&port=8080&tries=1\" && nslookup kubernetes.default.svc.cluster.local && nslookup upg-echo.upgraded-checks.svc.cluster.local && nc -z -w 5 SERVICE-IP 8080'   # exit 0: uncordon; otherwise roll the node back\n# devices (GPUs, SR-IOV): every extended resource allocatable as many as before the upgrade\nkubectl get node {node} -o jsonpath='{{.status.allocatable}}'   # compare with the same command's output before the upgrade",
                node_json = serde_json::Value::String(u.node.clone())
            ),
        }
    }
}

/// Whether a checks step at `boundary` checks its own node (before its uncordon) rather
/// than only the cluster.
fn boundary_checks_node(boundary: Boundary) -> bool {
    matches!(
        boundary,
        Boundary::AfterCanary | Boundary::AfterBatch | Boundary::BeforeKubeletRestart
    )
}

/// The run's checks at a boundary, by hand: the control plane's, a pod per generation placed by the
/// scheduler, the addons' images, Prometheus's targets and alerts against the baseline.
fn run_checks(boundary: Boundary, version: Version, label: &str) -> String {
    let mut o = format!(
        "# the control plane ({}): each kube-apiserver asked on its own node (not the load balancer),\n# the static pods' mirror pods Ready, etcd with a quorum\nfor n in $(kubectl get nodes -l node-role.kubernetes.io/control-plane -o name | cut -d/ -f2); do ssh \"$n\" curl -sk 'https://127.0.0.1:{}/readyz?verbose' | tail -n 1; done   # readyz check passed, on each\nkubectl -n kube-system get pods -l tier=control-plane -o wide   # every one Running and Ready{}\nETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt --key=/etc/kubernetes/pki/etcd/server.key endpoint health --cluster   # more than half healthy",
        boundary.name(),
        upgraded_events::check::control_plane::APISERVER_PORT,
        match boundary {
            Boundary::AfterControlPlaneNode | Boundary::AfterControlPlane => {
                format!(", this node's (every node's after the hop's last) images at :{version}")
            }
            _ => String::new(),
        }
    );
    if boundary == Boundary::AfterControlPlaneNode {
        return o;
    }
    let selector = serde_json::json!({"spec": {"nodeSelector": {label: "GENERATION"}}});
    o.push_str(&format!(
        "\n# the cluster's checks ({}): for each hardware generation, one pod the scheduler places\nkubectl get nodes -L {} --no-headers | awk '{{print $NF}}' | sort -u\nkubectl -n upgraded-checks run upg-sched-GENERATION --restart=Never --image=registry.k8s.io/e2e-test-images/agnhost:2.53 --overrides='{}' -- true\nkubectl -n upgraded-checks get pods -o wide   # each Completed, on a node of its generation",
        boundary.name(),
        label,
        selector
    ));
    if boundary != Boundary::Preflight {
        let coredns = upgraded_events::check::run::coredns_for(version).unwrap_or("kubeadm's tag");
        o.push_str(&format!(
            "\nkubectl -n kube-system get daemonset kube-proxy -o jsonpath='{{.spec.template.spec.containers[0].image}}'   # ends in :{version}\nkubectl -n kube-system get deployment coredns -o jsonpath='{{.spec.template.spec.containers[0].image}}'   # ends in :{coredns}"
        ));
    }
    o.push_str(
        r#"
# with Prometheus: no target down and no alert firing that was not so at the baseline
curl -s "$PROMETHEUS/api/v1/targets" | jq -r '.data.activeTargets[] | select(.health=="down") | .scrapeUrl'
curl -s "$PROMETHEUS/api/v1/alerts" | jq -r '.data.alerts[] | select(.state=="firing") | .labels.alertname'"#,
    );
    o
}

/// etcd's disaster recovery, one stage on one control-plane node.
fn etcd_restore(stage: &EtcdRestoreStage) -> String {
    let m = "/etc/kubernetes/manifests";
    let parked = "/etc/kubernetes/upgraded-parked";
    match stage {
        EtcdRestoreStage::StopApiserver => format!(
            "mkdir -p {parked} && mv {m}/kube-apiserver.yaml {parked}/
# wait until `crictl ps --name kube-apiserver -q` prints nothing"
        ),
        EtcdRestoreStage::Restore(r) => format!(
            "mv {m}/etcd.yaml {parked}/   # wait until `crictl ps --name etcd -q` prints nothing
             # the same snapshot on every member: sha256 {}
             etcdutl snapshot restore SNAPSHOT --name {} --initial-cluster {} --initial-cluster-token {} --initial-advertise-peer-urls {} --data-dir /var/lib/etcd.restored
             mv /var/lib/etcd /var/lib/etcd.before-restore && mv /var/lib/etcd.restored /var/lib/etcd",
            r.snapshot_sha256,
            shell_quote(&r.member),
            shell_quote(&r.initial_cluster),
            shell_quote(&r.token),
            shell_quote(&r.peer_url)
        ),
        EtcdRestoreStage::StartEtcd => format!("mv {parked}/etcd.yaml {m}/"),
        EtcdRestoreStage::StartControlPlane => format!(
            "etcdctl endpoint health --cluster   # every member healthy, one cluster ID in `endpoint status --cluster`
             mv {parked}/kube-apiserver.yaml {m}/
             for c in kube-controller-manager kube-scheduler; do mv {m}/$c.yaml {parked}/ && sleep 20 && mv {parked}/$c.yaml {m}/; done
             systemctl restart kubelet"
        ),
    }
}

/// The Markdown runbook: the same plan, as commands a person runs in order.
pub fn runbook(r: &PlanReport) -> String {
    let c = Cmds {
        r,
        pm: r.package_manager,
    };
    let mut o = String::new();
    let _ = writeln!(o, "# Runbook: upgrade to {}\n", r.target);
    if r.nothing_to_do() {
        let _ = writeln!(
            o,
            "Nothing to do: the control plane and every kubelet are at {}.",
            r.target
        );
        return o;
    }
    let _ = writeln!(
        o,
        "Control plane {} → {} one minor at a time; {} control-plane node(s), {} worker(s). \
         Estimated work: {}, planned {} → {} (UTC).\n",
        r.control_plane_from,
        r.target,
        r.control_plane_nodes.len(),
        r.workers,
        human_secs(r.estimate_secs),
        short_time(&r.start),
        short_time(&r.end)
    );
    let _ = writeln!(o, "## Before you start\n");
    let _ = writeln!(
        o,
        "1. Tell the people who depend on the cluster; keep this runbook open."
    );
    let _ = writeln!(
        o,
        "2. Record the versions: `kubectl get nodes -o wide > /backup/nodes-before.txt`."
    );
    let _ = writeln!(
        o,
        "3. Count the baseline: `kubectl get pods -A | grep -c CrashLoopBackOff`."
    );
    if r.external_etcd {
        let _ = writeln!(
            o,
            "4. etcd is external: take the snapshots below against its endpoints and certificates."
        );
    }
    if r.blocked {
        let _ = writeln!(
            o,
            "\n**This plan is BLOCKED. Fix every blocker below before step 1.**"
        );
    }
    if !r.findings.is_empty() {
        let _ = writeln!(o, "\n### Findings\n");
        for f in &r.findings {
            let sev = match f.severity {
                Severity::Blocker => "**BLOCKER**",
                Severity::Warning => "warning",
            };
            let _ = writeln!(o, "- {sev} `{}`: {}", f.code, md(&f.message));
            let _ = writeln!(o, "  - fix: {}", md(&f.fix));
        }
    }
    for p in &r.phases {
        let _ = writeln!(
            o,
            "\n## {} (≈ {})\n",
            md(&p.name),
            human_secs(p.estimate_secs)
        );
        for b in &p.batches {
            let names: Vec<String> = b.units.iter().map(|u| md(&u.node)).collect();
            let _ = writeln!(
                o,
                "### Batch {}: {} — {} ({}, from {} UTC)\n",
                b.number,
                md(&b.label),
                names.join(", "),
                human_secs(b.estimate_secs),
                short_time(&b.start)
            );
            if b.units.len() > 1 {
                let _ = writeln!(
                    o,
                    "These nodes are drained together; run each node's commands in parallel.\n"
                );
            }
            for u in &b.units {
                if b.units.len() > 1 || u.blocked.is_some() {
                    let _ = writeln!(o, "#### {}\n", md(&u.node));
                }
                if let Some(why) = &u.blocked {
                    let _ = writeln!(o, "**Blocked:** {}\n", md(why));
                }
                let _ = writeln!(o, "```sh");
                for s in &u.steps {
                    let _ = writeln!(o, "# --- {s}");
                    let _ = writeln!(o, "{}", c.step(u, s, r.drain_timeout_secs));
                }
                let _ = writeln!(o, "```\n");
            }
            let _ = writeln!(
                o,
                "Then wait {} and check `kubectl get nodes` and the pods before the next batch.\n",
                human_secs(r.wait_between_batches_secs)
            );
        }
    }
    let _ = writeln!(o, "## Rollback\n");
    let _ = writeln!(
        o,
        "Trigger it when a control-plane node fails to rejoin, when CrashLoopBackOff pods rise \
         over the baseline, or when networking or storage fails on upgraded nodes. kubeadm has \
         no rollback command. `upgradectl rollback --node NAME` takes nodes back to the versions \
         (and kubelet config) the run recorded before touching them, derived from the log \
         (`--plan` shows it first); by hand, packages go back newest node first.\n"
    );
    let _ = writeln!(
        o,
        "1. Stop: `upgradectl pause` (or stop running this runbook)."
    );
    let _ = writeln!(
        o,
        "2. On each upgraded node, drained, install its previous packages:\n"
    );
    let mut seen = std::collections::BTreeSet::new();
    for u in r.units().collect::<Vec<_>>().into_iter().rev() {
        if !seen.insert(u.node.clone()) {
            continue;
        }
        let node = word(&u.node);
        let _ = writeln!(o, "```sh\n# {} back to {}", md(&u.node), u.from);
        let _ = writeln!(
            o,
            "kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --timeout={}s",
            r.drain_timeout_secs
        );
        let _ = writeln!(o, "{}", c.repo(u.from));
        let _ = writeln!(o, "{}", c.downgrade(node_packages(true), u.from));
        let _ = writeln!(
            o,
            "systemctl daemon-reload && systemctl restart kubelet\nkubectl uncordon {node}\n```\n"
        );
    }
    let _ = writeln!(
        o,
        "3. Control plane: restore the static-pod manifests saved before the hop \
         (`cp /backup/manifests-pre-upgrade/* /etc/kubernetes/manifests/`, or kubeadm's own \
         `/etc/kubernetes/tmp/kubeadm-backup-manifests-*`).\n"
    );
    let _ = writeln!(
        o,
        "4. etcd's data, only if losing every write since the snapshot is acceptable \
         (`upgradectl rollback --to VERSION --etcd restore-snapshot --confirm-data-loss` does \
         this after step 3): stop every kube-apiserver (move its manifest out of \
         `/etc/kubernetes/manifests`), then on every member stop etcd the same way and restore \
         the same snapshot as a new cluster, with the member list `etcdctl member list` showed \
         before and one new token for all:\n\n```sh\nETCDCTL_API=3 etcdctl snapshot restore \
         /backup/etcd-pre-upgrade.db --data-dir /var/lib/etcd-restored --name \"$(hostname)\" \
         --initial-cluster 'cp-1=https://CP1:2380,cp-2=https://CP2:2380,cp-3=https://CP3:2380' \
         --initial-cluster-token etcd-restored-1 --initial-advertise-peer-urls \
         \"https://THIS-MEMBER:2380\"\nmv /var/lib/etcd /var/lib/etcd-broken && mv \
         /var/lib/etcd-restored /var/lib/etcd\n```\n\nThen put etcd's manifest back on every \
         member, wait for `etcdctl endpoint health --cluster`, put the apiservers back, and \
         restart the controller-managers, the schedulers and the kubelets.\n"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("worker-07"), "worker-07");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("x'; rm -rf /"), r"'x'\''; rm -rf /'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quote(""), "''");
    }
}
