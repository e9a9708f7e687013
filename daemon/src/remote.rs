//! Node-side commands as shell scripts: what the runbook has a person type, rendered from
//! typed [`RemoteCommand`]s and validated policy values. Every value is quoted with
//! [`shell_quote`]; node names never appear in a script at all. The script prints `key=value`
//! lines for the facts the daemon records; [`parse_facts`] reads them back.
//!
//! Pure: nothing here runs anything. The SSH adapter wraps a script in `timeout N sh -c …`.

use std::fmt::Write as _;

use upgraded_events::plan::{EtcdRestoreStage, node_packages};
use upgraded_events::{Facts, Version};
use upgraded_planner::catalog::package_version;
use upgraded_planner::policy::{NodeCommands, PackageManager, PlanPolicy};
use upgraded_planner::render::shell_quote;

use crate::ports::{PortError, RemoteCommand};

/// What the package tools and node commands look like on this cluster's nodes.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub package_manager: PackageManager,
    /// `{version}-1.1`.
    pub package_format: String,
    pub node: NodeCommands,
}

/// Where the daemon keeps its lock and markers on a node.
pub const STATE_DIR: &str = "/var/lib/upgraded";

/// A kubelet just installed has not been restarted: the markers of earlier restarts (of
/// this very version too, when a rollback brings it back) no longer hold.
const FORGET_RESTARTS: &str = "rm -f /var/lib/upgraded/kubelet-restarted-*\n";

/// Kubelet flags whose values differ by nature between the machines of a generation (its
/// address, name, cloud id): left out of the flag files' hash.
pub const VOLATILE_FLAGS: &[&str] = &["--node-ip", "--hostname-override", "--provider-id"];

/// A file older than whatever kubeadm writes next, to tell its new backup folders.
const KUBEADM_MARK: &str = "mark=$(mktemp)\n";

/// kubeadm copies the local etcd member's data before touching etcd but does not print
/// where: the folder it made after the mark is that copy (`kubeadm_backup_etcd_data`; the
/// etcd manifest's copy is `kubeadm_backup_etcd`).
const KUBEADM_ETCD_BACKUP: &str = "e=$(find /etc/kubernetes/tmp -maxdepth 1 -name 'kubeadm-backup-etcd-*' -newer \"$mark\" 2>/dev/null | head -n 1)\n\
if [ -n \"$e\" ]; then echo kubeadm_backup_etcd_data=\"$e\"; fi\nrm -f \"$mark\"\n";

/// Static pods, moved out of kubelet's manifest folder and back: `park C` moves C's manifest
/// aside and waits until its container is gone, `unpark C` puts it back, `running C` waits
/// until its container runs. Bounded: 120 s each.
const STATIC_PODS: &str = r#"m=/etc/kubernetes/manifests
p=/etc/kubernetes/upgraded-parked
mkdir -p "$p" && chmod 700 "$p"
wait_for() {
  end=$(( $(date +%s) + 120 ))
  while :; do
    out=$(crictl ps --name "^$2\$" -q) || { echo "crictl ps --name $2 failed" >&2; exit 4; }
    if [ "$1" = gone ] && [ -z "$out" ]; then break; fi
    if [ "$1" = running ] && [ -n "$out" ]; then break; fi
    if [ "$(date +%s)" -gt "$end" ]; then echo "$2 is not $1 120 s after its manifest moved" >&2; exit 4; fi
    sleep 0.2
  done
}
park() {
  if [ -e "$m/$1.yaml" ]; then mv "$m/$1.yaml" "$p/$1.yaml"; fi
  wait_for gone "$1"
  echo stopped_$(echo "$1" | tr - _)=true
}
unpark() { if [ -e "$p/$1.yaml" ]; then mv "$p/$1.yaml" "$m/$1.yaml"; fi; }
running() {
  wait_for running "$1"
  echo started_$(echo "$1" | tr - _)=true
}
"#;

/// A command line from already-separated words, each quoted.
fn words(ws: &[&str]) -> String {
    ws.iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Scripts {
    pub fn of(policy: &PlanPolicy) -> Scripts {
        Scripts {
            package_manager: policy.package_manager,
            package_format: policy.catalog.package_format.clone(),
            node: policy.node.clone(),
        }
    }

    /// Whether running `cmd` twice is harmless (so a lost connection may simply retry it).
    pub fn read_only(cmd: &RemoteCommand) -> bool {
        matches!(
            cmd,
            RemoteCommand::Preflight { .. }
                | RemoteCommand::Fingerprint
                | RemoteCommand::InstalledKubelet
                | RemoteCommand::EtcdHealth
                | RemoteCommand::ApiserverReadyz
                | RemoteCommand::ApiserverMetrics
        )
    }

    /// What a command whose answer was lost (the connection dropped after it was sent, the
    /// agent stopped answering) is to the fault rules: a read-only one changed nothing, so
    /// the node is only unreachable for now (`unreachable`); any other may have taken
    /// effect (`in-doubt`: probed before it is redone).
    pub fn lost_answer(cmd: &RemoteCommand) -> upgraded_events::fault::FailureKind {
        use upgraded_events::fault::FailureKind;
        if Self::read_only(cmd) {
            FailureKind::Unreachable
        } else {
            FailureKind::InDoubt
        }
    }

    pub fn render(&self, cmd: &RemoteCommand) -> String {
        let mut s = String::from("set -e\nexport LC_ALL=C DEBIAN_FRONTEND=noninteractive\n");
        if !Self::read_only(cmd) {
            // One changing command at a time per node: a command left running by a killed
            // daemon finishes (or hits its `timeout`) before the re-run looks at the node.
            let _ = writeln!(
                s,
                "mkdir -p {state}\nexec 9>{state}/node.lock\nflock 9",
                state = shell_quote(STATE_DIR)
            );
        }
        // When the node ran it (its own clock): on every outcome; a changing command also
        // leaves its times behind, so a re-run after a daemon stop tells when the node
        // finished the attempt whose outcome was never recorded.
        let key = Self::done_key(cmd);
        if let Some(k) = &key {
            let _ = writeln!(
                s,
                "donef={state}/done/{k}\nif [ -r \"$donef\" ]; then\n  read a b < \"$donef\" || true\n  \
                 echo earlier_node_started_ms=\"$a\"\n  echo earlier_node_ended_ms=\"$b\"\nfi",
                state = shell_quote(STATE_DIR),
                k = shell_quote(k)
            );
        }
        s.push_str("node_started_ms=$(date +%s%3N)\necho node_started_ms=\"$node_started_ms\"\n");
        self.body(&mut s, cmd);
        s.push_str("node_ended_ms=$(date +%s%3N)\n");
        if key.is_some() {
            let _ = writeln!(
                s,
                "mkdir -p {state}/done\necho \"$node_started_ms $node_ended_ms\" > \"$donef\"",
                state = shell_quote(STATE_DIR)
            );
        }
        s.push_str("echo node_ended_ms=\"$node_ended_ms\"\n");
        s
    }

    /// A changing command's name for the file its times are left in (plain: versions are
    /// validated releases).
    fn done_key(cmd: &RemoteCommand) -> Option<String> {
        let stage = |s: &EtcdRestoreStage| match s {
            EtcdRestoreStage::StopApiserver => "stop-apiserver",
            EtcdRestoreStage::Restore(_) => "restore",
            EtcdRestoreStage::StartEtcd => "start-etcd",
            EtcdRestoreStage::StartControlPlane => "start-control-plane",
        };
        let how = |apply: bool| if apply { "apply" } else { "node" };
        Some(match cmd {
            RemoteCommand::Preflight { .. }
            | RemoteCommand::Fingerprint
            | RemoteCommand::InstalledKubelet
            | RemoteCommand::EtcdHealth
            | RemoteCommand::ApiserverReadyz
            | RemoteCommand::ApiserverMetrics => return None,
            RemoteCommand::InstallPackages { version } => format!("install-packages-{version}"),
            RemoteCommand::DowngradePackages { version, .. } => {
                format!("downgrade-packages-{version}")
            }
            RemoteCommand::KubeadmUpgrade { version, apply } => {
                format!("kubeadm-upgrade-{}-{version}", how(*apply))
            }
            RemoteCommand::KubeadmDowngrade { version, apply } => {
                format!("kubeadm-downgrade-{}-{version}", how(*apply))
            }
            RemoteCommand::EtcdSnapshot { .. } => "etcd-snapshot".into(),
            RemoteCommand::RestartKubelet => "restart-kubelet".into(),
            RemoteCommand::EtcdRestore(s) => format!("etcd-restore-{}", stage(s)),
            RemoteCommand::RestoreKubeletFiles { version, .. } => {
                format!("restore-kubelet-files-{version}")
            }
        })
    }

    /// The command itself.
    fn body(&self, out: &mut String, cmd: &RemoteCommand) {
        let mut s = std::mem::take(out);
        match cmd {
            RemoteCommand::Preflight { .. } => self.preflight(&mut s),
            RemoteCommand::Fingerprint => self.fingerprint(&mut s),
            RemoteCommand::InstallPackages { version } => {
                self.repository(&mut s, *version);
                // Installed already (a re-run after a lost answer): only the holds again.
                let _ = writeln!(
                    s,
                    "if [ \"$(kubelet --version 2>/dev/null)\" = {} ]; then\n  echo already_installed=true",
                    shell_quote(&format!("Kubernetes {version}"))
                );
                if self.package_manager == PackageManager::Apt {
                    let mut hold = vec!["apt-mark", "hold"];
                    hold.extend_from_slice(node_packages(false));
                    let _ = writeln!(s, "  {} >/dev/null", words(&hold));
                }
                s.push_str("else\n");
                self.install(&mut s, node_packages(false), *version);
                s.push_str(FORGET_RESTARTS);
                s.push_str("fi\n");
                s.push_str("echo installed=\"$(kubelet --version | sed 's/^Kubernetes //')\"\n");
            }
            RemoteCommand::DowngradePackages {
                version,
                kubelet_config,
                kubeadm,
            } => {
                let pkgs = node_packages(*kubeadm);
                self.repository(&mut s, *version);
                let _ = writeln!(
                    s,
                    "if [ \"$(kubelet --version 2>/dev/null)\" = {} ]; then\n  echo already_installed=true",
                    shell_quote(&format!("Kubernetes {version}"))
                );
                if self.package_manager == PackageManager::Apt {
                    let mut hold = vec!["apt-mark", "hold"];
                    hold.extend_from_slice(pkgs);
                    let _ = writeln!(s, "  {} >/dev/null", words(&hold));
                }
                s.push_str("else\n");
                self.downgrade(&mut s, pkgs, *version);
                s.push_str(FORGET_RESTARTS);
                s.push_str("fi\n");
                if let Some(path) = kubelet_config {
                    // The config the forward run backed up while the node ran `version`;
                    // missing means the node lost it: stop, a person must look.
                    let _ = writeln!(
                        s,
                        "b={}\nif [ ! -f \"$b\" ]; then echo \"the kubelet config backup $b is gone\" >&2; exit 4; fi\n\
                         cp -a \"$b\" /var/lib/kubelet/config.yaml.upgraded-tmp\n\
                         mv /var/lib/kubelet/config.yaml.upgraded-tmp /var/lib/kubelet/config.yaml\n\
                         echo kubelet_config_restored=\"$b\"",
                        shell_quote(path)
                    );
                }
                s.push_str("echo installed=\"$(kubelet --version | sed 's/^Kubernetes //')\"\n");
            }
            RemoteCommand::KubeadmDowngrade { version, apply } => {
                // Our copy of what is there now (the hop's own backup keeps what was before).
                self.backup_as(&mut s, &format!("before-rollback-to-{version}"));
                self.repository(&mut s, *version);
                self.downgrade(&mut s, &["kubeadm"], *version);
                let v = version.to_string();
                s.push_str(KUBEADM_MARK);
                if *apply {
                    let _ = writeln!(s, "{}", words(&["kubeadm", "upgrade", "apply", &v, "-y"]));
                } else {
                    let _ = writeln!(s, "{}", words(&["kubeadm", "upgrade", "node"]));
                }
                s.push_str(KUBEADM_ETCD_BACKUP);
                let _ = writeln!(s, "echo kubeadm={}", shell_quote(&v));
            }
            RemoteCommand::KubeadmUpgrade { version, apply } => {
                self.backup(&mut s, *version);
                self.repository(&mut s, *version);
                self.install(&mut s, &["kubeadm"], *version);
                let v = version.to_string();
                // The kubelet config as it was before this hop's kubeadm (once: a re-run
                // compares with the original), to find the edits kubeadm drops.
                let _ = writeln!(
                    s,
                    "kb={dir}/before-kubeadm-{v}.yaml
mkdir -p {dir}
                     if [ ! -e \"$kb\" ] && [ -f /var/lib/kubelet/config.yaml ]; then cp -a /var/lib/kubelet/config.yaml \"$kb.upgraded-tmp\" && mv \"$kb.upgraded-tmp\" \"$kb\"; fi",
                    dir = shell_quote(&format!("{STATE_DIR}/kubelet-config")),
                    v = shell_quote(&v)
                );
                s.push_str(KUBEADM_MARK);
                let mut patches: Vec<&str> = Vec::new();
                if let Some(dir) = &self.node.kubeadm_patches {
                    patches.extend(["--patches", dir.as_str()]);
                }
                if *apply {
                    let _ = writeln!(s, "{}", words(&["kubeadm", "upgrade", "plan", &v]));
                    let mut w = vec!["kubeadm", "upgrade", "apply", &v, "-y"];
                    w.extend(&patches);
                    let _ = writeln!(s, "{}", words(&w));
                } else {
                    let mut w = vec!["kubeadm", "upgrade", "node"];
                    w.extend(&patches);
                    let _ = writeln!(s, "{}", words(&w));
                }
                s.push_str(KUBEADM_ETCD_BACKUP);
                s.push_str(
                    "if [ -f \"$kb\" ] && [ -f /var/lib/kubelet/config.yaml ]; then\n  \
                     echo kubelet_config_before_b64=\"$(base64 -w0 \"$kb\")\"\n  \
                     echo kubelet_config_after_b64=\"$(base64 -w0 /var/lib/kubelet/config.yaml)\"\nfi\n",
                );
                let _ = writeln!(s, "echo kubeadm={}", shell_quote(&v));
            }
            RemoteCommand::EtcdSnapshot {
                reuse_younger_than_secs,
            } => self.etcd_snapshot(&mut s, *reuse_younger_than_secs),
            RemoteCommand::InstalledKubelet => {
                // The kubelet's version, and what an in-doubt install's probe needs
                // (`plan::packages_installed`): each package's version and the holds.
                let (query, held) = self.package_queries();
                s.push_str("echo installed=\"$(kubelet --version | sed 's/^Kubernetes //')\"\n");
                let _ = writeln!(
                    s,
                    "for p in kubelet kubectl; do echo \"pkg_$p=$({query} || true)\"; done\n\
                     echo held=\"$({held} | grep -xE 'kubeadm|kubelet|kubectl' | sort | tr '\\n' ',' | sed 's/,$//' || true)\""
                );
            }
            RemoteCommand::EtcdRestore(stage) => self.etcd_restore(&mut s, stage),
            RemoteCommand::RestoreKubeletFiles { dir, server, .. } => {
                restore_kubelet_files(&mut s, dir, server.as_deref());
            }
            RemoteCommand::EtcdHealth => {
                // etcdctl exits non-zero when a member is down: the counts say how many.
                let _ = writeln!(
                    s,
                    "export ETCDCTL_API=3\nout=$({} endpoint health --cluster -w json 2>&1) || true\n\
                     echo members=\"$(printf '%s' \"$out\" | grep -o '\"health\":[a-z]*' | wc -l)\"\n\
                     echo healthy=\"$(printf '%s' \"$out\" | grep -o '\"health\":true' | wc -l)\"",
                    self.etcdctl()
                );
            }
            RemoteCommand::ApiserverReadyz => {
                // This node's instance, on its loopback: the load balancer answers as long
                // as any instance does. curl prints 000 when nothing answered.
                let _ = writeln!(
                    s,
                    "out=$(curl -sk --max-time 10 -w '\\n%{{http_code}}' {url} 2>/dev/null) || true\n\
                     echo readyz_status=\"$(printf '%s\\n' \"$out\" | tail -n 1 | tr -dc 0-9)\"\n\
                     echo readyz_failing=\"$(printf '%s\\n' \"$out\" | grep '^\\[-\\]' | tr '\\n' ' ' | cut -c 1-300)\"",
                    url = shell_quote(&format!(
                        "https://127.0.0.1:{}/readyz?verbose",
                        upgraded_events::check::control_plane::APISERVER_PORT
                    ))
                );
            }
            RemoteCommand::ApiserverMetrics => {
                // This node's instance (the load balancer would answer for any one), as
                // kubeadm's admin; only the series the gate reads leave the node (a large
                // apiserver's /metrics runs to megabytes).
                let _ = writeln!(
                    s,
                    "echo read_at=\"$(date +%s)\"\n\
                     out=$(kubectl --kubeconfig /etc/kubernetes/admin.conf --server {url} get --raw /metrics --request-timeout=20s)\n\
                     echo metrics_b64=\"$(printf '%s\\n' \"$out\" | grep -E '^(apiserver_requested_deprecated_apis|process_start_time_seconds|apiserver_request_total\\{{.*version=\"v[0-9]+(alpha|beta)[0-9]*\")' | base64 -w0)\"",
                    url = shell_quote(&format!(
                        "https://127.0.0.1:{}",
                        upgraded_events::check::control_plane::APISERVER_PORT
                    ))
                );
            }
            RemoteCommand::RestartKubelet => {
                // Once per installed version: the marker makes a re-run a no-op.
                let _ = writeln!(
                    s,
                    "v=$(kubelet --version | sed 's/^Kubernetes //')\nm={}/kubelet-restarted-$v\n\
                     if [ -e \"$m\" ]; then echo already_restarted=true; else\n  \
                     systemctl daemon-reload\n  systemctl restart kubelet\n  touch \"$m\"\nfi\n\
                     echo restarted=\"$v\"",
                    shell_quote(STATE_DIR)
                );
            }
        }
        *out = s;
    }

    /// The shell that prints package `$p`'s installed version, and the one that lists the
    /// held packages, for this package manager.
    fn package_queries(&self) -> (&'static str, &'static str) {
        match self.package_manager {
            PackageManager::Apt => (
                "dpkg-query -W -f='${Version}' \"$p\" 2>/dev/null",
                "apt-mark showhold 2>/dev/null",
            ),
            PackageManager::Dnf => (
                "rpm -q --qf '%{VERSION}-%{RELEASE}' \"$p\" 2>/dev/null",
                "dnf versionlock list 2>/dev/null | sed -n 's/^\\([a-z]*\\)-[0-9].*/\\1/p'",
            ),
        }
    }

    /// What tells the machine from its siblings (`drift::HOST_FACTS`), read-only. The
    /// kubelet flag files are hashed without the flags whose values differ by nature
    /// between machines (`VOLATILE_FLAGS`: its address, name, provider id).
    fn fingerprint(&self, s: &mut String) {
        let (_, held) = self.package_queries();
        let volatile = VOLATILE_FLAGS.join("|");
        let _ = writeln!(
            s,
            "echo kernel=\"$(uname -r)\"\n\
             echo kubelet_version=\"$(kubelet --version 2>/dev/null | sed 's/^Kubernetes //')\"\n\
             echo kernel_installed=\"$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|.*/vmlinuz-||' | sort -V | tail -n 1)\"\n\
             if [ -e /var/run/reboot-required ]; then echo reboot_required=true; else echo reboot_required=false; fi\n\
             echo os_image=\"$( (. /etc/os-release 2>/dev/null && printf '%s' \"$PRETTY_NAME\") || true)\"\n\
             echo containerd_version=\"$(containerd --version 2>/dev/null | awk '{{print $3}}' || true)\"\n\
             echo containerd_config_sha256=\"$(sha256sum /etc/containerd/config.toml 2>/dev/null | cut -d ' ' -f 1)\"\n\
             echo cgroup=\"$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)\"\n\
             echo swap_devices=\"$(tail -n +2 /proc/swaps 2>/dev/null | wc -l)\"\n\
             echo held=\"$({held} | grep -xE 'kubeadm|kubelet|kubectl' | sort | tr '\\n' ',' | sed 's/,$//' || true)\"\n\
             echo kubelet_flags_sha256=\"$(cat /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet /etc/sysconfig/kubelet 2>/dev/null | tr ' \\t\"' '\\n\\n\\n' | grep -- '^--' | grep -vE '^({volatile})(=|$)' | sort -u | sha256sum | cut -d ' ' -f 1)\""
        );
    }

    /// Read-only checks, each reported; [`preflight_verdict`] judges them.
    fn preflight(&self, s: &mut String) {
        s.push_str(
            "echo cgroup=\"$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)\"\n\
             p=/var/lib/kubelet; [ -d \"$p\" ] || p=/var/lib\n\
             echo disk_used_percent=\"$(df --output=pcent \"$p\" | tail -n 1 | tr -dc 0-9)\"\n\
             if crictl info >/dev/null 2>&1; then echo runtime=ok; else echo runtime=down; fi\n\
             echo swap_devices=\"$(tail -n +2 /proc/swaps | wc -l)\"\n\
             echo kubelet_flags=\"$(cat /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet /etc/sysconfig/kubelet 2>/dev/null | grep -o -- '--[a-z0-9-]*' | sort -u | tr '\\n' ' ' || true)\"\n\
             echo containerd_version=\"$(containerd --version 2>/dev/null | awk '{print $3}' || true)\"\n",
        );
        let refresh = match self.package_manager {
            PackageManager::Apt => words(&["apt-get", "update", "-q"]),
            PackageManager::Dnf => words(&["dnf", "makecache", "-q"]),
        };
        let _ = writeln!(
            s,
            "if {refresh} >/dev/null 2>&1; then echo repository=ok; else echo repository=unreachable; fi"
        );
        self.before(s);
    }

    /// What a rollback needs, recorded before the node is touched: the installed and held
    /// versions of kubeadm, kubelet and kubectl, and a copy of the kubelet config kept under
    /// the version it belongs to (made once; a copy that exists is never overwritten, so a
    /// later preflight cannot replace the original). The preflight runs without the node
    /// lock (it may run many at once): the copy goes to a private name and is hard-linked
    /// into place, which fails instead of replacing a copy another run made meanwhile.
    fn before(&self, s: &mut String) {
        let (query, held) = self.package_queries();
        let _ = writeln!(
            s,
            "for p in kubeadm kubelet kubectl; do echo \"pkg_$p=$({query} || true)\"; done\n\
             echo held=\"$({held} | grep -xE 'kubeadm|kubelet|kubectl' | sort | tr '\\n' ',' | sed 's/,$//' || true)\"\n\
             kv=$(kubelet --version 2>/dev/null | sed 's/^Kubernetes //' || true)\n\
             echo kubelet_installed=\"$kv\"\n\
             c=/var/lib/kubelet/config.yaml\n\
             if [ -n \"$kv\" ] && [ -f \"$c\" ]; then\n  \
             d={dir}\n  mkdir -p \"$d\"\n  b=\"$d/$kv.yaml\"\n  \
             if [ ! -e \"$b\" ]; then t=\"$b.$$.upgraded-tmp\"; cp -a \"$c\" \"$t\" && {{ ln \"$t\" \"$b\" 2>/dev/null || true; rm -f \"$t\"; }}; fi\n  \
             echo kubelet_config_backup=\"$b\"\n  \
             echo kubelet_config_sha256=\"$(sha256sum \"$b\" | cut -d ' ' -f 1)\"\nfi",
            dir = shell_quote(&format!("{STATE_DIR}/kubelet-config"))
        );
        // The files kubeadm 1.34 and 1.35 rewrite, kept the same way (a whole folder,
        // renamed into place once: a folder that exists is never replaced).
        let _ = writeln!(
            s,
            "if [ -n \"$kv\" ]; then\n  \
             fd={dir}/\"$kv\"\n  mkdir -p {dir}\n  \
             if [ ! -e \"$fd/complete\" ]; then\n    \
             t=\"$fd.$$.upgraded-tmp\"\n    rm -rf \"$t\"\n    mkdir -p \"$t\"\n    \
             for f in /var/lib/kubelet/kubeadm-flags.env /var/lib/kubelet/instance-config.yaml; do if [ -e \"$f\" ]; then cp -a \"$f\" \"$t/\"; fi; done\n    \
             if [ -d /etc/kubernetes/kubelet.conf.d ]; then cp -a /etc/kubernetes/kubelet.conf.d \"$t/\"; fi\n    \
             sed -n 's/^ *server: *//p' /etc/kubernetes/kubelet.conf 2>/dev/null | head -n 1 > \"$t/kubelet-conf-server\" || true\n    \
             touch \"$t/complete\"\n    \
             mv -T \"$t\" \"$fd\" 2>/dev/null || rm -rf \"$t\"\n  \
             fi\n  \
             echo kubelet_files_backup=\"$fd\"\n  \
             echo kubelet_conf_server=\"$(cat \"$fd/kubelet-conf-server\" 2>/dev/null || true)\"\nfi",
            dir = shell_quote(&format!("{STATE_DIR}/kubelet-files"))
        );
    }

    /// Points the package repository at `v`'s minor (pkgs.k8s.io: one repository per minor).
    fn repository(&self, s: &mut String, v: Version) {
        let _ = writeln!(s, "f={}", shell_quote(&self.node.repository_file));
        let _ = writeln!(
            s,
            "want={}",
            shell_quote(&self.node.repository(v.major, v.minor))
        );
        s.push_str(
            "if [ \"$(cat \"$f\" 2>/dev/null)\" != \"$want\" ]; then\n  \
             printf '%s\\n' \"$want\" > \"$f.upgraded-tmp\" && mv \"$f.upgraded-tmp\" \"$f\"\n  \
             echo repository_switched=true\nfi\n",
        );
    }

    /// unhold → install → hold (apt); dnf bypasses the repository's `exclude=` for this one
    /// install. A failed install puts the holds back.
    fn install(&self, s: &mut String, pkgs: &[&str], v: Version) {
        self.packages(s, pkgs, v, false);
    }

    /// unhold → install the older version, allowing apt to downgrade held packages → hold;
    /// dnf `downgrade`. A failed downgrade puts the holds back.
    fn downgrade(&self, s: &mut String, pkgs: &[&str], v: Version) {
        self.packages(s, pkgs, v, true);
    }

    fn packages(&self, s: &mut String, pkgs: &[&str], v: Version, down: bool) {
        let ver = package_version(&self.package_format, v);
        match self.package_manager {
            PackageManager::Apt => {
                let mut unhold = vec!["apt-mark", "unhold"];
                unhold.extend_from_slice(pkgs);
                let mut hold = vec!["apt-mark", "hold"];
                hold.extend_from_slice(pkgs);
                let specs: Vec<String> = pkgs.iter().map(|p| format!("{p}={ver}")).collect();
                let mut install = vec!["apt-get", "install", "-y"];
                if down {
                    install.extend(["--allow-downgrades", "--allow-change-held-packages"]);
                }
                install.extend(specs.iter().map(String::as_str));
                let _ = writeln!(s, "{} >/dev/null", words(&unhold));
                let _ = writeln!(s, "trap '{} >/dev/null' EXIT", words(&hold));
                let _ = writeln!(s, "{}", words(&["apt-get", "update", "-q"]));
                let _ = writeln!(s, "{}", words(&install));
                s.push_str("trap - EXIT\n");
                let _ = writeln!(s, "{}", words(&hold));
            }
            PackageManager::Dnf => {
                let specs: Vec<String> = pkgs.iter().map(|p| format!("{p}-{ver}")).collect();
                let verb = if down { "downgrade" } else { "install" };
                let mut cmd = vec!["dnf", verb, "-y"];
                cmd.extend(specs.iter().map(String::as_str));
                cmd.push("--disableexcludes=kubernetes");
                let _ = writeln!(s, "{}", words(&cmd));
            }
        }
    }

    /// Copies of the static-pod manifests and kubeconfigs, once per hop: a re-run after a
    /// half-done `kubeadm upgrade` keeps the copy from before it.
    fn backup(&self, s: &mut String, v: Version) {
        self.backup_as(s, &v.to_string());
    }

    /// [`Scripts::backup`] into `<backup dir>/<name>`.
    fn backup_as(&self, s: &mut String, name: &str) {
        let dir = format!("{}/{name}", self.node.backup_dir);
        let _ = writeln!(s, "b={}", shell_quote(&dir));
        s.push_str(
            "if [ ! -e \"$b/complete\" ]; then\n  \
             rm -rf \"$b\" && mkdir -p \"$b\"\n  \
             if [ -d /etc/kubernetes/manifests ]; then cp -a /etc/kubernetes/manifests \"$b/\"; fi\n  \
             for c in /etc/kubernetes/*.conf; do if [ -e \"$c\" ]; then cp -a \"$c\" \"$b/\"; fi; done\n  \
             touch \"$b/complete\"\nfi\necho backup=\"$b\"\n",
        );
    }

    fn etcdctl(&self) -> String {
        let n = &self.node;
        let mut w = vec![
            "etcdctl".to_string(),
            format!("--endpoints={}", n.etcd_endpoints),
        ];
        for (flag, v) in [
            ("--cacert", &n.etcd_cacert),
            ("--cert", &n.etcd_cert),
            ("--key", &n.etcd_key),
        ] {
            if !v.is_empty() {
                w.push(format!("{flag}={v}"));
            }
        }
        let refs: Vec<&str> = w.iter().map(String::as_str).collect();
        words(&refs)
    }

    /// Save (or keep a young one), prove it by a trial restore (`snapshot status` does not
    /// check integrity), and report path, size, sha256 and revision.
    fn etcd_snapshot(&self, s: &mut String, reuse: Option<u64>) {
        let _ = writeln!(
            s,
            "export ETCDCTL_API=3\nd={}\nmkdir -p \"$d\"\nf=",
            shell_quote(&self.node.etcd_snapshot_dir)
        );
        if let Some(age) = reuse {
            let _ = writeln!(
                s,
                "latest=$(ls -1t \"$d\"/snapshot-*.db 2>/dev/null | head -n 1)\n\
                 if [ -n \"$latest\" ] && [ $(( $(date +%s) - $(stat -c %Y \"$latest\") )) -lt {age} ]; then f=$latest; echo reused=true; fi"
            );
        }
        let _ = writeln!(
            s,
            "if [ -z \"$f\" ]; then\n  \
             f=\"$d/snapshot-$(date -u +%Y%m%dT%H%M%SZ).db\"\n  \
             {etcdctl} snapshot save \"$f.part\" >&2\n  \
             mv \"$f.part\" \"$f\"\n  \
             echo reused=false\nfi",
            etcdctl = self.etcdctl()
        );
        s.push_str(
            "t=$(mktemp -d)\n\
             trap 'rm -rf \"$t\"' EXIT\n\
             if command -v etcdutl >/dev/null 2>&1; then restore=etcdutl; else restore=etcdctl; fi\n\
             if ! $restore snapshot restore \"$f\" --data-dir \"$t/restore\" >&2 || [ ! -d \"$t/restore/member\" ]; then\n  \
             echo \"the trial restore of $f failed: the snapshot is not usable\" >&2; exit 3\nfi\n\
             echo path=\"$f\"\n\
             echo size=\"$(stat -c %s \"$f\")\"\n\
             echo sha256=\"$(sha256sum \"$f\" | cut -d ' ' -f 1)\"\n\
             echo status=\"$($restore snapshot status \"$f\" -w json 2>/dev/null | tr -d '\\n')\"\n",
        );
        // The members then, `name=peerURL,…` (the first peer URL of each), for a restore.
        let _ = writeln!(
            s,
            "echo members=\"$({etcdctl} member list -w simple 2>/dev/null | awk -F', ' 'NF >= 4 && $3 != \"\" {{ split($4, u, \",\"); printf \"%s%s=%s\", sep, $3, u[1]; sep = \",\" }}')\"",
            etcdctl = self.etcdctl()
        );
    }

    /// One stage of etcd's disaster recovery. Static pods stop and start as kubelet sees
    /// their manifests go and come back; `crictl ps` says when they have.
    fn etcd_restore(&self, s: &mut String, stage: &EtcdRestoreStage) {
        s.push_str(STATIC_PODS);
        match stage {
            EtcdRestoreStage::StopApiserver => {
                s.push_str(
                    "if [ ! -e \"$m/kube-apiserver.yaml\" ] && [ ! -e \"$p/kube-apiserver.yaml\" ]; then\n  \
                     echo \"no kube-apiserver manifest in $m or $p\" >&2; exit 4\nfi\n\
                     park kube-apiserver\n",
                );
            }
            EtcdRestoreStage::Restore(r) => {
                let _ = writeln!(
                    s,
                    "export ETCDCTL_API=3\nsha={sha}\nf={dir}/restore-\"$sha\".db\ndata={data}\n\
                     token={token}\nmarker={state}/etcd-restored-\"$token\"\n\
                     new=\"$data.restore-$token\"\nold=\"$data.before-$token\"",
                    sha = shell_quote(&r.snapshot_sha256),
                    dir = shell_quote(&self.node.etcd_snapshot_dir),
                    data = shell_quote(&self.node.etcd_data_dir),
                    token = shell_quote(&r.token),
                    state = shell_quote(STATE_DIR),
                );
                let _ = writeln!(
                    s,
                    "if [ -e \"$marker\" ]; then\n  echo already_restored=true\nelse\n  \
                     if [ ! -e \"$m/etcd.yaml\" ] && [ ! -e \"$p/etcd.yaml\" ]; then echo \"no etcd manifest in $m or $p\" >&2; exit 4; fi\n  \
                     park etcd\n  \
                     if [ \"$(sha256sum \"$f\" 2>/dev/null | cut -d ' ' -f 1)\" != \"$sha\" ]; then echo \"the snapshot on the node ($f) is not the one recorded (sha256 $sha)\" >&2; exit 5; fi\n  \
                     if command -v etcdutl >/dev/null 2>&1; then restore=etcdutl; else restore=etcdctl; fi\n  \
                     rm -rf \"$new\"\n  \
                     $restore snapshot restore \"$f\" --name {name} --initial-cluster {cluster} --initial-cluster-token \"$token\" --initial-advertise-peer-urls {url} --data-dir \"$new\" >&2\n  \
                     if [ ! -e \"$old\" ] && [ -e \"$data\" ]; then mv \"$data\" \"$old\"; fi\n  \
                     rm -rf \"$data\"\n  \
                     mv \"$new\" \"$data\"\n  chmod 700 \"$data\"\n  \
                     touch \"$marker\"\nfi\n\
                     echo data_dir=\"$data\"\necho kept=\"$old\"\necho member={name}",
                    name = shell_quote(&r.member),
                    cluster = shell_quote(&r.initial_cluster),
                    url = shell_quote(&r.peer_url),
                );
            }
            EtcdRestoreStage::StartEtcd => s.push_str("unpark etcd\nrunning etcd\n"),
            EtcdRestoreStage::StartControlPlane => {
                let _ = writeln!(
                    s,
                    "export ETCDCTL_API=3\nend=$(( $(date +%s) + 120 ))\n\
                     until {etcdctl} endpoint health --cluster >/dev/null 2>&1; do\n  \
                     if [ \"$(date +%s)\" -gt \"$end\" ]; then echo \"etcd is not healthy on every member 120 s after the restore\" >&2; {etcdctl} endpoint health --cluster >&2 || true; exit 4; fi\n  \
                     sleep 0.5\ndone\n\
                     ids=$({etcdctl} endpoint status --cluster -w json | grep -o '\"cluster_id\":[0-9]*' | sort -u | cut -d : -f 2 | tr '\\n' ' ')\n\
                     echo etcd_cluster_ids=\"$ids\"\n\
                     if [ \"$(echo $ids | wc -w)\" != 1 ]; then echo \"etcd's members report cluster IDs '$ids': not one cluster\" >&2; exit 4; fi\n\
                     unpark kube-apiserver\nrunning kube-apiserver\n\
                     for c in kube-controller-manager kube-scheduler; do\n  \
                     if [ -e \"$m/$c.yaml\" ] || [ -e \"$p/$c.yaml\" ]; then park \"$c\"; unpark \"$c\"; running \"$c\"; fi\ndone\n\
                     systemctl restart kubelet\necho kubelet_restarted=true",
                    etcdctl = self.etcdctl()
                );
            }
        }
    }
}

/// kubeadm's own backups, from what `kubeadm upgrade apply|node` printed: for each static
/// pod it replaced, `kubeadm_backup_<component>` = the old manifest's copy (and
/// `kubeadm_backup_manifests` = their folder); a component whose manifest did not change has
/// no copy and is recorded as `unchanged`.
pub fn kubeadm_backups(stdout: &str) -> Facts {
    let mut facts = Facts::new();
    let key = |c: &str| format!("kubeadm_backup_{}", c.replace('-', "_"));
    let component_ok =
        |c: &str| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-');
    for line in stdout.lines() {
        if let Some((_, rest)) = line.split_once("backed up old manifest to \"") {
            let Some(path) = rest.split('"').next() else {
                continue;
            };
            if path.chars().any(char::is_control) {
                continue;
            }
            let Some((dir, file)) = path.rsplit_once('/') else {
                continue;
            };
            let Some(component) = file.strip_suffix(".yaml").filter(|c| component_ok(c)) else {
                continue;
            };
            facts.insert(key(component), path.to_string());
            facts
                .entry("kubeadm_backup_manifests".to_string())
                .or_insert_with(|| dir.to_string());
        } else if let Some((_, rest)) = line.split_once("Current and new manifests of ")
            && let Some((component, _)) = rest.split_once(" are equal")
            && component_ok(component)
        {
            facts.insert(key(component), "unchanged".into());
        }
    }
    facts
}

/// A rollback's restore of the kubelet files the preflight kept in `dir`: each file as it
/// was (one kubeadm added since is removed), then kubelet.conf's `server` line set to
/// `server` (given to awk through its environment: never parsed as a program or a pattern).
fn restore_kubelet_files(s: &mut String, dir: &str, server: Option<&str>) {
    let _ = writeln!(
        s,
        "d={}\nif [ ! -e \"$d/complete\" ]; then echo \"the kubelet files kept at $d are gone\" >&2; exit 4; fi\n\
         for f in kubeadm-flags.env instance-config.yaml; do\n  \
         if [ -e \"$d/$f\" ]; then cp -a \"$d/$f\" \"/var/lib/kubelet/$f.upgraded-tmp\" && mv \"/var/lib/kubelet/$f.upgraded-tmp\" \"/var/lib/kubelet/$f\"\n  \
         else rm -f \"/var/lib/kubelet/$f\"; fi\ndone\n\
         c=/etc/kubernetes/kubelet.conf.d\nrm -rf \"$c.upgraded-tmp\"\n\
         if [ -d \"$d/kubelet.conf.d\" ]; then cp -a \"$d/kubelet.conf.d\" \"$c.upgraded-tmp\" && rm -rf \"$c\" && mv \"$c.upgraded-tmp\" \"$c\"; else rm -rf \"$c\"; fi",
        shell_quote(dir)
    );
    if let Some(server) = server {
        let _ = writeln!(
            s,
            "k=/etc/kubernetes/kubelet.conf\nif [ -f \"$k\" ]; then\n  \
             cp -a \"$k\" \"$k.upgraded-tmp\"\n  \
             S={} awk '{{ if ($1 == \"server:\") {{ i = index($0, \"server:\"); print substr($0, 1, i - 1) \"server: \" ENVIRON[\"S\"]; next }} print }}' \"$k\" > \"$k.upgraded-tmp\"\n  \
             mv \"$k.upgraded-tmp\" \"$k\"\n  \
             echo kubelet_conf_server=\"$(sed -n 's/^ *server: *//p' \"$k\" | head -n 1)\"\nfi",
            shell_quote(server)
        );
    }
    s.push_str("echo kubelet_files_restored=\"$d\"\n");
}

/// `key=value` lines of a script's standard output (the core reads them).
pub use upgraded_events::facts::parse_facts;

/// The snapshot's revision from `snapshot status -w json` (`{"hash":…,"revision":N,…}`).
pub fn snapshot_revision(status: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    v["revision"].as_u64()
}

/// The version-change rules (`upgraded_events::rules`) on a node's preflight facts: what
/// they find refuses the node, every finding named. Not retryable: a person has to change
/// the machine.
pub fn rules_verdict(node: &str, target: Version, facts: &Facts) -> Result<(), PortError> {
    refuse(
        node,
        upgraded_events::rules::node_findings(target, facts)
            .iter()
            .map(|f| format!("{} ({}: {})", f.what, f.rule, f.fix))
            .collect(),
    )
}

/// Whether `kubeadm upgrade` to `target` kept the node's own kubelet settings: the copies
/// of `config.yaml` from before and after it that the script reported (base64 of YAML; the
/// sim's agents report JSON, which is YAML too) are judged by the core
/// (`rules::lost_edits`) and replaced in `facts` by what they found
/// (`kubelet_config_lost`: the keys, or empty). A lost edit is not retryable: a person puts
/// it where kubeadm keeps it. Copies that cannot be read are noted, not judged.
pub fn kubelet_config_verdict(
    node: &str,
    target: Version,
    facts: &mut Facts,
) -> Result<(), PortError> {
    let (Some(before), Some(after)) = (
        facts.remove("kubelet_config_before_b64"),
        facts.remove("kubelet_config_after_b64"),
    ) else {
        return Ok(());
    };
    let read = |b64: &str| -> Result<serde_json::Map<String, serde_json::Value>, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| e.to_string())?;
        match serde_yaml::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string())? {
            serde_json::Value::Object(m) => Ok(m),
            _ => Err("not a mapping".into()),
        }
    };
    let (before, after) = match (read(&before), read(&after)) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => {
            facts.insert("kubelet_config_unreadable".into(), e);
            return Ok(());
        }
    };
    let lost = upgraded_events::rules::lost_edits(&before, &after, target);
    let keys: Vec<&str> = lost.iter().map(|l| l.key.as_str()).collect();
    facts.insert("kubelet_config_lost".into(), keys.join(","));
    if lost.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = lost.iter().map(ToString::to_string).collect();
    let mut e = PortError::fatal(format!(
        "node {node}: kubeadm upgrade to {target} dropped a hand edit of the kubelet config ({}): {}",
        what.join("; "),
        upgraded_events::rules::LOST_EDIT_FIX
    ));
    e.facts.extend(std::mem::take(facts));
    Err(e)
}

/// Whether the node may be upgraded to `target`, from what [`Scripts::render`]'s preflight
/// reported, as the core judges it (`upgraded_events::preflight`). Refusals are not
/// retryable: a person has to change the machine.
pub fn preflight_verdict(
    node: &str,
    target: Version,
    facts: &Facts,
    max_disk_used_percent: u32,
) -> Result<(), PortError> {
    let limits = upgraded_events::preflight::Limits {
        max_disk_used_percent,
    };
    refuse(
        node,
        upgraded_events::preflight::refusals(target, facts, limits),
    )
}

/// A refusal naming everything found, or nothing.
fn refuse(node: &str, found: Vec<String>) -> Result<(), PortError> {
    if found.is_empty() {
        return Ok(());
    }
    Err(PortError::fatal(format!(
        "preflight: node {node}: {}",
        found.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use upgraded_events::plan::EtcdRestore;

    fn scripts(pm: &str) -> Scripts {
        let p = PlanPolicy::from_yaml(&format!("packageManager: {pm}")).expect("policy");
        Scripts::of(&p)
    }

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    /// Every line of `order` occurs in `s`, in that order.
    fn in_order(s: &str, order: &[&str]) {
        let mut at = 0;
        for line in order {
            let i = s[at..]
                .find(line)
                .unwrap_or_else(|| panic!("{line:?} missing or out of order in:\n{s}"));
            at += i + line.len();
        }
    }

    /// The etcd health script counts members and healthy ones from `etcdctl`'s JSON, also
    /// when etcdctl exits non-zero because a member is down.
    #[test]
    fn etcd_health_counts_members_from_etcdctl_json() {
        let facts = run_with_fake(
            "etcdctl",
            "#!/bin/sh\necho '[{\"endpoint\":\"https://10.0.0.1:2379\",\"health\":true},{\"endpoint\":\"https://10.0.0.2:2379\",\"health\":false,\"error\":\"context deadline exceeded\"},{\"endpoint\":\"https://10.0.0.3:2379\",\"health\":true}]'\nexit 1\n",
            &RemoteCommand::EtcdHealth,
        );
        assert_eq!(facts.get("members").map(String::as_str), Some("3"));
        assert_eq!(facts.get("healthy").map(String::as_str), Some("2"));
    }

    /// `tools` as scripts in `dir/bin` (each `#!/bin/sh` and its body); the PATH that finds
    /// them first.
    fn stub_tools(dir: &std::path::Path, tools: &[(&str, &str)]) -> String {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for (name, body) in tools {
            let f = bin.join(name);
            std::fs::write(&f, format!("#!/bin/sh\n{body}\n")).expect("write");
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `script` run by sh with `path`, which must succeed; its facts.
    fn sh(script: &str, path: &str) -> Facts {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .env("PATH", path)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        parse_facts(&String::from_utf8_lossy(&out.stdout))
    }

    /// A read-only command's script run with a fake `tool` first on PATH; its facts.
    fn run_with_fake(tool: &str, body: &str, cmd: &RemoteCommand) -> Facts {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join(tool);
        std::fs::write(&fake, body).expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let script = scripts("apt").render(cmd);
        assert!(!script.contains("flock"), "read-only: {script}");
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        parse_facts(&String::from_utf8_lossy(&out.stdout))
    }

    /// A fake `curl` answering as a kube-apiserver would; the script's facts.
    fn readyz_with(fake_curl: &str) -> Facts {
        run_with_fake("curl", fake_curl, &RemoteCommand::ApiserverReadyz)
    }

    #[test]
    fn apiserver_readyz_reports_the_status_and_the_failing_checks_of_this_nodes_instance() {
        // The URL curl is given is this node's loopback, never a load balancer.
        let f = readyz_with(
            "#!/bin/sh\nfor a; do u=$a; done\n[ \"$u\" = 'https://127.0.0.1:6443/readyz?verbose' ] || exit 9\n\
             printf '[+]ping ok\\n[-]etcd failed: reason withheld\\n[+]log ok\\nreadyz check failed\\n\\n500'\nexit 0\n",
        );
        assert_eq!(f.get("readyz_status").map(String::as_str), Some("500"));
        assert_eq!(
            f.get("readyz_failing").map(|s| s.trim()),
            Some("[-]etcd failed: reason withheld")
        );
        let ok = readyz_with("#!/bin/sh\nprintf '[+]ping ok\\nreadyz check passed\\n200'\n");
        assert_eq!(ok.get("readyz_status").map(String::as_str), Some("200"));
        // Nothing listening: curl prints 000 and exits 7; the script still reports.
        let refused = readyz_with("#!/bin/sh\nprintf '\\n000'\nexit 7\n");
        assert_eq!(
            refused.get("readyz_status").map(String::as_str),
            Some("000")
        );
    }

    #[test]
    fn apt_install_unholds_installs_and_holds_again() {
        let s = scripts("apt").render(&RemoteCommand::InstallPackages {
            version: v("v1.34.6"),
        });
        let order = [
            "apt-mark unhold kubelet kubectl",
            "trap 'apt-mark hold kubelet kubectl >/dev/null' EXIT",
            "apt-get update -q",
            "apt-get install -y kubelet=1.34.6-1.1 kubectl=1.34.6-1.1",
            "trap - EXIT",
            "apt-mark hold kubelet kubectl",
        ];
        in_order(&s, &order);
        assert!(
            s.contains("https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /"),
            "{s}"
        );
    }

    #[test]
    fn apt_downgrade_allows_held_packages_to_go_back_then_restores_the_kubelet_config() {
        let s = scripts("apt").render(&RemoteCommand::DowngradePackages {
            version: v("v1.33.5"),
            kubelet_config: Some("/var/lib/upgraded/kubelet-config/v1.33.5.yaml".into()),
            kubeadm: false,
        });
        let order = [
            "flock 9",
            "https://pkgs.k8s.io/core:/stable:/v1.33/deb/ /",
            "apt-mark unhold kubelet kubectl",
            "trap 'apt-mark hold kubelet kubectl >/dev/null' EXIT",
            "apt-get install -y --allow-downgrades --allow-change-held-packages kubelet=1.33.5-1.1 kubectl=1.33.5-1.1",
            "apt-mark hold kubelet kubectl",
            // A restart of this version before the upgrade does not count for this one.
            "rm -f /var/lib/upgraded/kubelet-restarted-*",
            "b=/var/lib/upgraded/kubelet-config/v1.33.5.yaml",
            "mv /var/lib/kubelet/config.yaml.upgraded-tmp /var/lib/kubelet/config.yaml",
            "echo installed=",
        ];
        in_order(&s, &order);
        let d = scripts("dnf").render(&RemoteCommand::DowngradePackages {
            version: v("v1.33.5"),
            kubelet_config: None,
            kubeadm: true,
        });
        assert!(
            d.contains("dnf downgrade -y kubeadm-1.33.5-150500.1.1 kubelet-1.33.5-150500.1.1 kubectl-1.33.5-150500.1.1 --disableexcludes=kubernetes"),
            "{d}"
        );
        assert!(
            !d.contains("config.yaml"),
            "no backup recorded, none restored: {d}"
        );
        for script in [&s, &d] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{out:?}");
        }
    }

    /// The preflight records what a rollback needs, and its config copy is made once.
    #[test]
    fn preflight_records_packages_holds_and_one_kubelet_config_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = stub_tools(
            dir.path(),
            &[
                ("kubelet", "echo 'Kubernetes v1.33.5'"),
                ("dpkg-query", "echo -n \"1.33.5-1.1\""),
                ("apt-mark", "printf 'kubeadm\\nkubectl\\nkubelet\\nvim\\n'"),
                ("apt-get", "exit 0"),
                ("crictl", "exit 0"),
            ],
        );
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "kind: KubeletConfiguration\n").expect("config");
        let state = dir.path().join("state");
        let script = scripts("apt")
            .render(&RemoteCommand::Preflight {
                target: v("v1.34.6"),
            })
            .replace(
                "/var/lib/kubelet/config.yaml",
                &config.display().to_string(),
            )
            .replace(STATE_DIR, &state.display().to_string());
        assert!(!script.contains("flock"), "read-only: {script}");
        let run = || sh(&script, &path);
        // Many at once (the preflight takes no lock): one copy, every run reports it.
        let concurrent: Vec<_> = (0..16)
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", &script])
                    .env("PATH", &path)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("sh runs")
            })
            .collect();
        for child in concurrent {
            let out = child.wait_with_output().expect("wait");
            assert!(out.status.success(), "{out:?}");
        }
        let facts = run();
        for p in ["kubeadm", "kubelet", "kubectl"] {
            assert_eq!(
                facts.get(&format!("pkg_{p}")).map(String::as_str),
                Some("1.33.5-1.1")
            );
        }
        assert_eq!(
            facts.get("held").map(String::as_str),
            Some("kubeadm,kubectl,kubelet")
        );
        assert_eq!(
            facts.get("kubelet_installed").map(String::as_str),
            Some("v1.33.5")
        );
        let backup = state.join("kubelet-config/v1.33.5.yaml");
        assert_eq!(
            facts.get("kubelet_config_backup").map(String::as_str),
            Some(backup.display().to_string().as_str())
        );
        assert_eq!(
            facts.get("kubelet_config_sha256").map(String::len),
            Some(64)
        );
        // A later preflight (the config changed meanwhile) keeps the first copy.
        std::fs::write(&config, "kind: KubeletConfiguration\nchanged: true\n").expect("config");
        let again = run();
        assert_eq!(
            again.get("kubelet_config_sha256"),
            facts.get("kubelet_config_sha256")
        );
        assert_eq!(
            std::fs::read_to_string(&backup).expect("backup"),
            "kind: KubeletConfiguration\n"
        );
    }

    /// The fingerprint reads what tells machines apart, and its flag hash ignores the flags
    /// that differ by nature (the node's address) but not the others.
    #[test]
    fn the_fingerprint_hashes_flags_without_the_volatile_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = stub_tools(
            dir.path(),
            &[
                ("kubelet", "echo 'Kubernetes v1.33.5'"),
                ("apt-mark", "printf 'kubeadm\\nkubelet\\n'"),
                (
                    "containerd",
                    "echo 'containerd github.com/containerd/containerd v1.7.24 abc'",
                ),
            ],
        );
        let flags = dir.path().join("kubeadm-flags.env");
        let script = scripts("apt").render(&RemoteCommand::Fingerprint).replace(
            "/var/lib/kubelet/kubeadm-flags.env",
            &flags.display().to_string(),
        );
        assert!(!script.contains("flock"), "read-only: {script}");
        let run = |content: &str| {
            std::fs::write(&flags, content).expect("flags");
            sh(&script, &path)
        };
        let a = run(
            "KUBELET_KUBEADM_ARGS=\"--node-ip=10.0.0.1 --pod-infra-container-image=pause:3.10\"\n",
        );
        let b = run(
            "KUBELET_KUBEADM_ARGS=\"--pod-infra-container-image=pause:3.10 --node-ip=10.0.0.2\"\n",
        );
        let c = run(
            "KUBELET_KUBEADM_ARGS=\"--node-ip=10.0.0.1 --pod-infra-container-image=pause:3.9\"\n",
        );
        assert_eq!(a.get("kubelet_flags_sha256"), b.get("kubelet_flags_sha256"));
        assert_ne!(a.get("kubelet_flags_sha256"), c.get("kubelet_flags_sha256"));
        assert_eq!(
            a.get("kubelet_version").map(String::as_str),
            Some("v1.33.5")
        );
        assert_eq!(
            a.get("containerd_version").map(String::as_str),
            Some("v1.7.24")
        );
        assert_eq!(a.get("held").map(String::as_str), Some("kubeadm,kubelet"));
        for k in [
            "kernel",
            "reboot_required",
            "cgroup",
            "swap_devices",
            "os_image",
        ] {
            assert!(a.contains_key(k), "{k}: {a:?}");
        }
    }

    /// The preflight keeps the files kubeadm 1.34 rewrites; after kubeadm moved the CRI
    /// socket (flags file rewritten, instance-config.yaml and a kubelet.conf.d drop-in
    /// written, kubelet.conf pointed elsewhere), the restore puts every one back as it was,
    /// run twice (a retry) to the same end. The server travels as data, never as a program.
    #[test]
    fn kubelet_files_kept_at_preflight_are_restored_by_a_rollback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let path = stub_tools(
            root,
            &[
                ("kubelet", "echo 'Kubernetes v1.33.5'"),
                ("dpkg-query", "echo -n \"1.33.5-1.1\""),
                ("apt-mark", "exit 0"),
                ("apt-get", "exit 0"),
                ("crictl", "exit 0"),
            ],
        );
        let kubelet = root.join("kubelet");
        let etc = root.join("etc-kubernetes");
        std::fs::create_dir_all(&kubelet).expect("mkdir");
        std::fs::create_dir_all(&etc).expect("mkdir");
        let flags_133 = "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n";
        std::fs::write(kubelet.join("kubeadm-flags.env"), flags_133).expect("flags");
        std::fs::write(kubelet.join("config.yaml"), "kind: KubeletConfiguration\n").expect("c");
        let conf = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: X\n    server: https://10.0.0.10:6443\n  name: default-cluster\n";
        std::fs::write(etc.join("kubelet.conf"), conf).expect("conf");
        let state = root.join("state");
        let local = |script: String| {
            script
                .replace("/var/lib/kubelet", &kubelet.display().to_string())
                .replace("/etc/kubernetes", &etc.display().to_string())
                .replace(STATE_DIR, &state.display().to_string())
        };
        let run = |script: &str| sh(script, &path);
        let kept = run(&local(scripts("apt").render(&RemoteCommand::Preflight {
            target: v("v1.34.6"),
        })));
        let backup = state.join("kubelet-files/v1.33.5").display().to_string();
        assert_eq!(kept.get("kubelet_files_backup"), Some(&backup), "{kept:?}");
        assert_eq!(
            kept.get("kubelet_conf_server").map(String::as_str),
            Some("https://10.0.0.10:6443")
        );
        // kubeadm 1.34 (and a hand with the server) after it.
        std::fs::write(
            kubelet.join("kubeadm-flags.env"),
            "KUBELET_KUBEADM_ARGS=\"--pod-infra-container-image=registry.k8s.io/pause:3.10\"\n",
        )
        .expect("flags");
        std::fs::write(
            kubelet.join("instance-config.yaml"),
            "containerRuntimeEndpoint: unix:///var/run/containerd/containerd.sock\n",
        )
        .expect("instance");
        std::fs::create_dir_all(etc.join("kubelet.conf.d")).expect("mkdir");
        std::fs::write(etc.join("kubelet.conf.d/00-x.conf"), "x").expect("drop-in");
        std::fs::write(
            etc.join("kubelet.conf"),
            conf.replace("https://10.0.0.10:6443", "https://127.0.0.1:6443"),
        )
        .expect("conf");
        // A later preflight keeps the first copy.
        let again = run(&local(scripts("apt").render(&RemoteCommand::Preflight {
            target: v("v1.34.6"),
        })));
        assert_eq!(
            again.get("kubelet_conf_server").map(String::as_str),
            Some("https://10.0.0.10:6443")
        );
        let server = "https://10.0.0.10:6443/&$(reboot)";
        let restore = local(scripts("apt").render(&RemoteCommand::RestoreKubeletFiles {
            version: v("v1.33.5"),
            dir: backup.clone(),
            server: Some(server.into()),
        }));
        assert!(restore.contains("flock"), "it changes the node: {restore}");
        for _ in 0..2 {
            let f = run(&restore);
            assert_eq!(f.get("kubelet_files_restored"), Some(&backup));
            assert_eq!(
                f.get("kubelet_conf_server").map(String::as_str),
                Some(server)
            );
        }
        assert_eq!(
            std::fs::read_to_string(kubelet.join("kubeadm-flags.env")).expect("flags"),
            flags_133
        );
        assert!(!kubelet.join("instance-config.yaml").exists());
        assert!(!etc.join("kubelet.conf.d").exists());
        assert_eq!(
            std::fs::read_to_string(etc.join("kubelet.conf")).expect("conf"),
            conf.replace("https://10.0.0.10:6443", server)
        );
        // A copy that is gone stops the restore with its name.
        let gone = local(scripts("apt").render(&RemoteCommand::RestoreKubeletFiles {
            version: v("v1.33.5"),
            dir: "/nowhere/v1.33.5".into(),
            server: None,
        }));
        let out = std::process::Command::new("sh")
            .args(["-c", &gone])
            .env("PATH", &path)
            .output()
            .expect("sh runs");
        assert_eq!(out.status.code(), Some(4));
        assert!(String::from_utf8_lossy(&out.stderr).contains("/nowhere/v1.33.5"));
    }

    #[test]
    fn kubeadm_downgrade_backs_up_downgrades_kubeadm_then_applies_the_older_version() {
        let s = scripts("apt").render(&RemoteCommand::KubeadmDowngrade {
            version: v("v1.34.6"),
            apply: true,
        });
        let order = [
            "flock 9",
            "/before-rollback-to-v1.34.6",
            "cp -a /etc/kubernetes/manifests",
            "https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /",
            "apt-mark unhold kubeadm",
            "apt-get install -y --allow-downgrades --allow-change-held-packages kubeadm=1.34.6-1.1",
            "apt-mark hold kubeadm",
            "kubeadm upgrade apply v1.34.6 -y",
            "echo kubeadm=v1.34.6",
        ];
        in_order(&s, &order);
        let node = scripts("apt").render(&RemoteCommand::KubeadmDowngrade {
            version: v("v1.34.6"),
            apply: false,
        });
        assert!(node.contains("kubeadm upgrade node\n") && !node.contains("upgrade apply"));
    }

    /// What kubeadm prints when it replaces static pods, and when one is unchanged.
    #[test]
    fn kubeadm_backups_are_read_from_its_output_unchanged_components_included() {
        let out = "[upgrade/staticpods] Preparing for \"etcd\" upgrade
[upgrade/staticpods] Moved new manifest to \"/etc/kubernetes/manifests/etcd.yaml\" and backed up old manifest to \"/etc/kubernetes/tmp/kubeadm-backup-manifests-2026-11-30-05-20-01/etcd.yaml\"
[upgrade/staticpods] Component \"etcd\" upgraded successfully!
[upgrade/staticpods] Moved new manifest to \"/etc/kubernetes/manifests/kube-apiserver.yaml\" and backed up old manifest to \"/etc/kubernetes/tmp/kubeadm-backup-manifests-2026-11-30-05-20-01/kube-apiserver.yaml\"
[upgrade/staticpods] Current and new manifests of kube-scheduler are equal, skipping upgrade
kubeadm=v1.35.3
";
        let f = kubeadm_backups(out);
        assert_eq!(
            f.get("kubeadm_backup_kube_apiserver").map(String::as_str),
            Some(
                "/etc/kubernetes/tmp/kubeadm-backup-manifests-2026-11-30-05-20-01/kube-apiserver.yaml"
            )
        );
        assert_eq!(
            f.get("kubeadm_backup_etcd").map(String::as_str),
            Some("/etc/kubernetes/tmp/kubeadm-backup-manifests-2026-11-30-05-20-01/etcd.yaml")
        );
        assert_eq!(
            f.get("kubeadm_backup_kube_scheduler").map(String::as_str),
            Some("unchanged")
        );
        assert_eq!(
            f.get("kubeadm_backup_manifests").map(String::as_str),
            Some("/etc/kubernetes/tmp/kubeadm-backup-manifests-2026-11-30-05-20-01")
        );
        assert!(
            !f.contains_key("kubeadm_backup_kube_controller_manager"),
            "not mentioned: {f:?}"
        );
        // Nothing a hostile line could smuggle in.
        let f = kubeadm_backups(
            "backed up old manifest to \"/x/a;b.yaml\"\nCurrent and new manifests of $(x) are equal",
        );
        assert!(f.is_empty(), "{f:?}");
        let s = scripts("apt").render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.35.3"),
            apply: true,
        });
        let mark = s.find("mark=$(mktemp)").expect("mark");
        let apply = s.find("kubeadm upgrade apply").expect("apply");
        let find = s
            .find("-name 'kubeadm-backup-etcd-*' -newer")
            .expect("etcd copy");
        assert!(mark < apply && apply < find, "{s}");
    }

    #[test]
    fn dnf_install_bypasses_excludes_and_points_at_the_minor() {
        let s = scripts("dnf").render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.35.3"),
            apply: false,
        });
        assert!(
            s.contains("dnf install -y kubeadm-1.35.3-150500.1.1 --disableexcludes=kubernetes")
        );
        assert!(s.contains("baseurl=https://pkgs.k8s.io/core:/stable:/v1.35/rpm/"));
        assert!(s.contains("kubeadm upgrade node\n"));
        assert!(!s.contains("apt-"));
    }

    /// kubeadm gets the policy's patches, and the kubelet config is kept before it runs.
    #[test]
    fn kubeadm_takes_the_patches_and_the_kubelet_config_is_compared() {
        let plain = scripts("apt").render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.34.6"),
            apply: false,
        });
        assert!(plain.contains("kubeadm upgrade node\n"), "{plain}");
        let p = PlanPolicy::from_yaml("node: { kubeadmPatches: \"/etc/kubernetes/it's patches\" }")
            .expect("policy");
        let s = Scripts::of(&p);
        let node = s.render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.34.6"),
            apply: false,
        });
        assert!(
            node.contains("kubeadm upgrade node --patches '/etc/kubernetes/it'\\''s patches'\n"),
            "{node}"
        );
        let apply = s.render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.34.6"),
            apply: true,
        });
        assert!(apply.contains("kubeadm upgrade apply v1.34.6 -y --patches '/etc/kubernetes/it'"));
        let keep = node
            .find("kb=/var/lib/upgraded/kubelet-config/before-kubeadm-v1.34.6.yaml")
            .expect("the copy before");
        let run = node.find("kubeadm upgrade node").expect("kubeadm");
        let report = node
            .find("echo kubelet_config_after_b64=")
            .expect("the report");
        assert!(keep < run && run < report, "{node}");
    }

    /// The before and after copies as the script reports them (base64 of YAML).
    #[test]
    fn a_lost_kubelet_config_edit_is_a_permanent_failure_naming_the_key() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let before =
            "kind: KubeletConfiguration\ncgroupDriver: systemd\nreservedSystemCPUs: \"0-1\"\n";
        let after = "kind: KubeletConfiguration\ncgroupDriver: systemd\n";
        let mut f: Facts = [
            ("kubelet_config_before_b64".to_string(), b64(before)),
            ("kubelet_config_after_b64".to_string(), b64(after)),
        ]
        .into();
        let e = kubelet_config_verdict("w-1", v("v1.34.6"), &mut f).expect_err("lost");
        assert!(!e.is_retryable());
        assert!(
            e.what
                .contains("reservedSystemCPUs was \"0-1\" and is gone"),
            "{}",
            e.what
        );
        assert_eq!(
            e.facts.get("kubelet_config_lost").map(String::as_str),
            Some("reservedSystemCPUs")
        );
        assert!(
            !e.facts.contains_key("kubelet_config_before_b64"),
            "copies are not recorded"
        );
        let mut same: Facts = [
            ("kubelet_config_before_b64".to_string(), b64(after)),
            ("kubelet_config_after_b64".to_string(), b64(after)),
        ]
        .into();
        assert!(kubelet_config_verdict("w-1", v("v1.34.6"), &mut same).is_ok());
        assert_eq!(
            same.get("kubelet_config_lost").map(String::as_str),
            Some("")
        );
        let mut broken: Facts = [
            ("kubelet_config_before_b64".to_string(), "%%%".to_string()),
            ("kubelet_config_after_b64".to_string(), b64(after)),
        ]
        .into();
        assert!(kubelet_config_verdict("w-1", v("v1.34.6"), &mut broken).is_ok());
        assert!(broken.contains_key("kubelet_config_unreadable"));
        // Nothing reported (an older agent): nothing judged.
        assert!(kubelet_config_verdict("w-1", v("v1.34.6"), &mut Facts::new()).is_ok());
    }

    #[test]
    fn kubeadm_apply_backs_up_then_plans_then_applies() {
        let s = scripts("apt").render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.34.6"),
            apply: true,
        });
        let b = s.find("cp -a /etc/kubernetes/manifests").expect("backup");
        let i = s
            .find("apt-get install -y kubeadm=1.34.6-1.1")
            .expect("install");
        let p = s.find("kubeadm upgrade plan v1.34.6").expect("plan");
        let a = s.find("kubeadm upgrade apply v1.34.6 -y").expect("apply");
        assert!(b < i && i < p && p < a, "{s}");
        assert!(s.contains("b=/var/lib/upgraded/backup/v1.34.6"));
    }

    #[test]
    fn etcd_snapshot_uses_kubeadm_certs_or_none_and_verifies_by_restore() {
        let s = scripts("apt").render(&RemoteCommand::EtcdSnapshot {
            reuse_younger_than_secs: None,
        });
        assert!(s.contains("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt --key=/etc/kubernetes/pki/etcd/server.key snapshot save"), "{s}");
        assert!(s.contains("snapshot restore \"$f\" --data-dir \"$t/restore\""));
        assert!(!s.contains("latest="));
        let plain = PlanPolicy::from_yaml(
            "node: { etcd: { endpoints: 'http://127.0.0.1:2379', cacert: '', cert: '', key: '' } }",
        )
        .expect("policy");
        let s = Scripts::of(&plain).render(&RemoteCommand::EtcdSnapshot {
            reuse_younger_than_secs: Some(3600),
        });
        assert!(
            s.contains("etcdctl --endpoints=http://127.0.0.1:2379 snapshot save"),
            "{s}"
        );
        assert!(s.contains("-lt 3600 ]"));
    }

    #[test]
    fn hostile_policy_values_stay_quoted() {
        let p = PlanPolicy::from_yaml(
            "node: { backupDir: \"/srv/it's $(reboot)\", repository: { template: \"deb x/v{minor}/ /'; reboot; '\" } }",
        )
        .expect("policy");
        let s = Scripts::of(&p).render(&RemoteCommand::KubeadmUpgrade {
            version: v("v1.34.6"),
            apply: false,
        });
        assert!(s.contains(r"b='/srv/it'\''s $(reboot)/v1.34.6'"), "{s}");
        assert!(
            s.contains(r"want='deb x/v1.34/ /'\''; reboot; '\'''"),
            "{s}"
        );
    }

    #[test]
    fn every_script_is_valid_sh() {
        let cmds = [
            RemoteCommand::Preflight {
                target: v("v1.35.3"),
            },
            RemoteCommand::InstallPackages {
                version: v("v1.34.6"),
            },
            RemoteCommand::KubeadmUpgrade {
                version: v("v1.34.6"),
                apply: true,
            },
            RemoteCommand::KubeadmUpgrade {
                version: v("v1.34.6"),
                apply: false,
            },
            RemoteCommand::EtcdSnapshot {
                reuse_younger_than_secs: None,
            },
            RemoteCommand::EtcdSnapshot {
                reuse_younger_than_secs: Some(60),
            },
            RemoteCommand::InstalledKubelet,
            RemoteCommand::RestartKubelet,
            RemoteCommand::EtcdHealth,
        ];
        for pm in ["apt", "dnf"] {
            for c in &cmds {
                let script = scripts(pm).render(c);
                let out = std::process::Command::new("sh")
                    .args(["-n", "-c", &script])
                    .output()
                    .expect("sh runs");
                assert!(
                    out.status.success(),
                    "{pm} {c:?}: {}\n{script}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn facts_and_verdicts() {
        let f = parse_facts(
            "noise\ncgroup=cgroup2fs\ndisk_used_percent=40\nruntime=ok\nswap_devices=0\nrepository=ok\nBad Key=x\n",
        );
        assert_eq!(f.len(), 5);
        assert!(preflight_verdict("w-1", v("v1.35.3"), &f, 85).is_ok());
        let mut v1 = f.clone();
        v1.insert("cgroup".into(), "tmpfs".into());
        let e = preflight_verdict("w-1", v("v1.35.3"), &v1, 85).expect_err("cgroup v1");
        assert!(e.what.contains("not cgroup v2") && !e.is_retryable(), "{e}");
        assert!(preflight_verdict("w-1", v("v1.34.6"), &v1, 85).is_ok());
        // A kubelet flag the target removed, read from the node's flag files.
        let mut flags = f.clone();
        flags.insert(
            "kubelet_flags".into(),
            "--container-runtime-endpoint --keep-terminated-pod-volumes --node-ip".into(),
        );
        assert!(preflight_verdict("w-1", v("v1.30.9"), &flags, 85).is_ok());
        let e = preflight_verdict("w-1", v("v1.31.2"), &flags, 85).expect_err("removed flag");
        assert!(
            e.what.contains("--keep-terminated-pod-volumes")
                && e.what.contains("kubelet-flag-removed-1.31")
                && !e.is_retryable(),
            "{e}"
        );
        let mut full = f.clone();
        full.insert("disk_used_percent".into(), "93".into());
        let e = preflight_verdict("w-1", v("v1.34.6"), &full, 85).expect_err("disk");
        assert!(e.what.contains("93% full"), "{e}");
        let mut swap = f;
        swap.insert("swap_devices".into(), "1".into());
        assert!(preflight_verdict("w-1", v("v1.34.6"), &swap, 85).is_err());
        assert_eq!(
            snapshot_revision(r#"{"hash":1,"revision":42,"totalKey":3,"totalSize":20480}"#),
            Some(42)
        );
    }

    /// Every stage of a restore is a script `sh` accepts, with the member's values quoted
    /// (a value that is not plain stays one word), and the restore stage does its work once
    /// per token.
    #[test]
    fn etcd_restore_stages_are_quoted_scripts_that_restore_once() {
        let r = EtcdRestore {
            snapshot_sha256: "ab".repeat(32),
            snapshot_copy: "/var/lib/upgraded/snapshots/cp-1/snapshot-x.db".into(),
            member: "cp-1".into(),
            peer_url: "https://10.0.0.1:2380".into(),
            initial_cluster: "cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380;x".into(),
            token: "upgraded-restore-abababababab-1".into(),
        };
        let sc = scripts("apt");
        for stage in [
            EtcdRestoreStage::StopApiserver,
            EtcdRestoreStage::Restore(r.clone()),
            EtcdRestoreStage::StartEtcd,
            EtcdRestoreStage::StartControlPlane,
        ] {
            let script = sc.render(&RemoteCommand::EtcdRestore(stage.clone()));
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("sh");
            assert!(out.status.success(), "{stage:?}: {out:?}\n{script}");
            // Changes the node: under the node lock.
            assert!(script.contains("flock 9"), "{stage:?}");
        }
        let script = sc.render(&RemoteCommand::EtcdRestore(EtcdRestoreStage::Restore(r)));
        assert!(
            script.contains(
                "--initial-cluster 'cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380;x'"
            ),
            "{script}"
        );
        assert!(
            script.contains("marker=/var/lib/upgraded/etcd-restored-\"$token\""),
            "{script}"
        );
        assert!(script.contains("if [ -e \"$marker\" ]; then\n  echo already_restored=true"));
        assert!(script.contains("data=/var/lib/etcd\n"), "{script}");
    }
}
