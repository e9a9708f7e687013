//! The lab's node tools: one program installed on every lab node as `kubeadm`, `kubelet`,
//! `kubectl`, `apt-get`, `apt-mark`, `apt-cache`, `dpkg-query`, `dnf`, `systemctl` and `crictl`
//! (it reads its name from argv[0]).
//!
//! Each call is appended to `$LAB_CTL/calls.jsonl`; the node's package state lives in
//! `$LAB_CTL/state.json`; effects on the cluster go to the sim's `/sim/v1` API (URL in
//! `$LAB_CTL/sim`). Exit codes and the output the daemon parses follow the real tools.
//! `$LAB_CTL/faults/<tool>` makes a tool fail, hang or be slow: one rule per line,
//! `ACTION [SUBSTRING]`, ACTION one of `fail[:CODE]`, `hang`, `slow:SECONDS`; the rule applies
//! when SUBSTRING (default: anything) occurs in the joined arguments.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use upgraded_events::version::Version;
use upgraded_planner::catalog::Catalog;

const PACKAGES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];

/// What is installed on the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Package → installed version string (`1.33.5-1.1`).
    packages: BTreeMap<String, String>,
    holds: Vec<String>,
    /// The kubelet binary the running service was started from.
    kubelet_running: String,
    /// Set by `systemctl daemon-reload`; cleared on restart.
    #[serde(default)]
    reloaded: bool,
}

struct Ctx {
    tool: String,
    args: Vec<String>,
    ctl: PathBuf,
    node: String,
}

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let tool = argv
        .next()
        .as_deref()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let args: Vec<String> = argv.collect();
    let ctl = PathBuf::from(std::env::var("LAB_CTL").unwrap_or_else(|_| "/var/lib/lab".into()));
    let node = std::env::var("LAB_NODE").unwrap_or_default();
    let ctx = Ctx {
        tool,
        args,
        ctl,
        node,
    };
    if let Some(rule) = ctx.fault() {
        ctx.record(-1, &format!("fault {rule}"));
        // `slow` returns None and the call goes on after the delay.
        if let Some(code) = apply_fault(&rule) {
            eprintln!("{}: injected failure ({rule})", ctx.tool);
            return ExitCode::from(code);
        }
    }
    let (code, out, err) = ctx.dispatch();
    // Recorded before the output: when the caller has gone (the daemon was killed and its
    // ssh session closed), `print!` would panic on the broken pipe and a call whose effect
    // was made would be missing from the record. Like apt, finish the work and report what
    // can be reported.
    ctx.record(i32::from(code), "");
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stderr().write_all(err.as_bytes());
    ExitCode::from(code)
}

/// `fail[:N]` → exit N (default 1); `hang` → sleeps "forever" (until killed); `slow:S` →
/// sleeps S seconds and lets the call go on.
fn apply_fault(rule: &str) -> Option<u8> {
    let action = rule.split_whitespace().next().unwrap_or_default();
    if let Some(rest) = action.strip_prefix("fail") {
        return Some(rest.trim_start_matches(':').parse().unwrap_or(1));
    }
    if action == "hang" {
        std::thread::sleep(Duration::from_secs(24 * 3600));
        return Some(124);
    }
    if let Some(s) = action.strip_prefix("slow:") {
        std::thread::sleep(Duration::from_secs_f64(s.parse().unwrap_or(1.0)));
    }
    None
}

type Out = (u8, String, String);

/// The etcd image tag kubeadm pairs with a Kubernetes minor (what the lab needs of it).
fn etcd_of(v: Version) -> &'static str {
    match v.minor {
        m if m >= 34 => "3.6.4-0",
        _ => "3.5.21-0",
    }
}

fn ok(s: impl Into<String>) -> Out {
    (0, s.into(), String::new())
}

fn fail(code: u8, s: impl Into<String>) -> Out {
    (code, String::new(), s.into())
}

impl Ctx {
    fn fault(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.ctl.join("faults").join(&self.tool)).ok()?;
        let joined = self.args.join(" ");
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .find(|l| match l.split_once(' ') {
                Some((_, sub)) => joined.contains(sub.trim()),
                None => true,
            })
            .map(str::to_string)
    }

    fn record(&self, exit: i32, note: &str) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = serde_json::json!({
            "t": t as u64, "node": self.node, "tool": self.tool, "args": self.args,
            "exit": exit, "note": note,
        });
        // One write(2) per line: O_APPEND keeps a single write whole, while `writeln!` may
        // write the line and its newline separately, and concurrent stubs then interleave
        // into lines that do not parse (and calls that seem never to have ended).
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ctl.join("calls.jsonl"))
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }

    fn state(&self) -> State {
        std::fs::read_to_string(self.ctl.join("state.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    fn save(&self, s: &State) -> Result<(), String> {
        let tmp = self.ctl.join("state.json.tmp");
        let text = serde_json::to_string_pretty(s).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.ctl.join("state.json")).map_err(|e| e.to_string())
    }

    /// POSTs to the sim's control API.
    /// The cluster's version as the API server reports it (`GET /version`).
    fn cluster_version(&self) -> Option<Version> {
        let v: serde_json::Value =
            serde_json::from_str(&self.sim_request("GET", "/version", None).ok()?).ok()?;
        v["gitVersion"].as_str()?.parse().ok()
    }

    fn sim(&self, path: &str, body: &serde_json::Value) -> Result<String, String> {
        self.sim_request("POST", path, Some(body))
    }

    fn sim_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, String> {
        let url = std::fs::read_to_string(self.ctl.join("sim"))
            .map_err(|e| format!("no sim URL: {e}"))?;
        let host = url
            .trim()
            .strip_prefix("http://")
            .ok_or("the sim URL is not http://")?;
        let host = host.trim_end_matches('/');
        let mut s = TcpStream::connect(host)
            .map_err(|e| format!("connecting to the sim at {host}: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        let code = resp.split_whitespace().nth(1).unwrap_or("0");
        let payload = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
            .to_string();
        if code.starts_with('2') {
            Ok(payload)
        } else {
            Err(format!("sim answered {code}: {payload}"))
        }
    }

    fn node_path(&self, what: &str) -> String {
        format!("/sim/v1/nodes/{}/{what}", encode(&self.node))
    }

    fn dispatch(&self) -> Out {
        let a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        match self.tool.as_str() {
            "kubeadm" => self.kubeadm(&a),
            "kubelet" => self.kubelet(&a),
            "kubectl" => ok(""),
            "apt-get" => self.apt_get(&a),
            "apt-mark" => self.apt_mark(&a),
            "apt-cache" => self.apt_cache(&a),
            "dpkg-query" => self.dpkg_query(&a),
            "dnf" => self.dnf(&a),
            "systemctl" => self.systemctl(&a),
            "crictl" => crictl(&a),
            "curl" => self.curl(&a),
            other => fail(127, format!("labstub: unknown tool {other:?}\n")),
        }
    }

    /// Only the node's own kube-apiserver's `/readyz` (the lab runs none: its mirror pod in
    /// the sim stands for it), written as `curl -w '\n%{http_code}'` writes it; nothing
    /// listening is curl's 000 and exit 7.
    fn curl(&self, a: &[&str]) -> Out {
        if a.last() != Some(&"https://127.0.0.1:6443/readyz?verbose") {
            return fail(
                2,
                format!("labstub curl: only this node's /readyz, not {a:?}\n"),
            );
        }
        let path = format!(
            "/api/v1/namespaces/kube-system/pods/{}",
            encode(&format!("kube-apiserver-{}", self.node))
        );
        let ready = self
            .sim_request("GET", &path, None)
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|p| {
                p["status"]["conditions"].as_array().map(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .unwrap_or(false);
        if ready {
            ok("[+]ping ok\n[+]etcd ok\nreadyz check passed\n\n200")
        } else {
            (7, "\n000".into(), String::new())
        }
    }

    fn installed(&self, pkg: &str) -> Option<Version> {
        self.state().packages.get(pkg).and_then(|v| v.parse().ok())
    }

    fn kubeadm(&self, a: &[&str]) -> Out {
        let Some(mine) = self.installed("kubeadm") else {
            return fail(127, "kubeadm: command not found\n");
        };
        match a {
            ["version", "-o", "short"] | ["version", "--output=short"] => ok(format!("{mine}\n")),
            ["version", ..] => ok(format!(
                "kubeadm version: &version.Info{{Major:\"1\", Minor:\"{}\", GitVersion:\"{mine}\", GitTreeState:\"clean\", GoVersion:\"go1.24.0\", Compiler:\"gc\", Platform:\"linux/amd64\"}}\n",
                mine.minor
            )),
            ["upgrade", "plan", ..] => ok(format!(
                "[upgrade/config] Reading configuration from the cluster...\n[upgrade] Running cluster health checks\n[upgrade] Fetching available versions to upgrade to\nYou can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply {mine}\n"
            )),
            ["upgrade", "apply", rest @ ..] => {
                let Some(target) = rest.iter().find(|s| !s.starts_with('-')) else {
                    return fail(1, "[upgrade/version] FATAL: missing version argument\n");
                };
                let Ok(target) = target.parse::<Version>() else {
                    return fail(
                        1,
                        format!("[upgrade/version] FATAL: invalid version {target:?}\n"),
                    );
                };
                if !rest
                    .iter()
                    .any(|s| *s == "-y" || *s == "--yes" || s.starts_with("--yes="))
                {
                    return fail(
                        1,
                        "[upgrade/confirm] Are you sure you want to proceed? [y/N]: error: aborted (no -y and no terminal)\n",
                    );
                }
                if target > mine {
                    return fail(
                        1,
                        format!(
                            "[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\n\t- Specified version to upgrade to \"{target}\" is higher than the kubeadm version \"{mine}\". Upgrade kubeadm first using the tool you used to install kubeadm\n"
                        ),
                    );
                }
                // kubeadm's version policy on the way down: one minor at a time, and etcd
                // stays where it is.
                let cluster = self.cluster_version();
                if let Some(c) = cluster
                    && target.major == c.major
                    && target.minor + 1 < c.minor
                {
                    return fail(
                        1,
                        format!(
                            "[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\n\t- Specified version to downgrade to \"{target}\" is too low; kubeadm can downgrade only 1 minor version at a time\n"
                        ),
                    );
                }
                let etcd_note = match cluster {
                    Some(c) if target < c => format!(
                        "[upgrade/etcd] Non fatal issue encountered during upgrade: the desired etcd version for this Kubernetes version \"{target}\" is \"{}\", but the current etcd version is \"{}\". Won't downgrade etcd, instead just continue\n",
                        etcd_of(target),
                        etcd_of(c)
                    ),
                    _ => String::new(),
                };
                match self.sim(
                    &self.node_path("control-plane"),
                    &serde_json::json!({"version": target.to_string()}),
                ) {
                    Ok(_) => ok(format!(
                        "{etcd_note}[upgrade/successful] SUCCESS! A control plane node of your cluster was upgraded to \"{target}\".\n\n[upgrade/kubelet] Now that your control plane is upgraded, please proceed with upgrading your kubelets if you haven't already done so.\n"
                    )),
                    Err(e) => fail(1, format!("[upgrade/apply] FATAL: {e}\n")),
                }
            }
            ["upgrade", "node", ..] => {
                if self.is_control_plane() {
                    if let Err(e) = self.sim(
                        &self.node_path("control-plane"),
                        &serde_json::json!({"version": mine.to_string()}),
                    ) {
                        return fail(1, format!("[upgrade] FATAL: {e}\n"));
                    }
                    ok(
                        "[upgrade] Upgrading your Static Pod-hosted control plane instance...\n[upgrade] The control plane instance for this node was successfully updated!\n[upgrade] The configuration for this node was successfully updated!\n",
                    )
                } else {
                    ok(
                        "[upgrade] Skipping phase. Not a control plane node.\n[upgrade] The configuration for this node was successfully updated!\n",
                    )
                }
            }
            _ => fail(
                1,
                format!("kubeadm: unsupported arguments {a:?} in the lab\n"),
            ),
        }
    }

    fn is_control_plane(&self) -> bool {
        Path::new("/etc/kubernetes/manifests/kube-apiserver.yaml").exists()
            || self.ctl.join("control-plane").exists()
    }

    fn kubelet(&self, a: &[&str]) -> Out {
        match (a, self.installed("kubelet")) {
            (["--version"], Some(v)) => ok(format!("Kubernetes {v}\n")),
            (_, None) => fail(127, "kubelet: command not found\n"),
            _ => fail(1, "kubelet: only --version is supported in the lab\n"),
        }
    }

    /// The minor the node's package repository points at (`/etc/apt/sources.list.d/
    /// kubernetes.list` or `/etc/yum.repos.d/kubernetes.repo`, as pkgs.k8s.io lays them out).
    fn repo_minor(&self) -> Option<(u16, u16)> {
        let text = std::fs::read_to_string("/etc/apt/sources.list.d/kubernetes.list")
            .or_else(|_| std::fs::read_to_string("/etc/yum.repos.d/kubernetes.repo"))
            .ok()?;
        let i = text.find("/stable:/v")?;
        let rest = &text[i + "/stable:/v".len()..];
        let end = rest.find('/')?;
        let (major, minor) = rest[..end].split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    }

    fn available(&self, format: &str) -> Vec<String> {
        let Some((major, minor)) = self.repo_minor() else {
            return vec![];
        };
        let catalog = Catalog::builtin();
        let latest = catalog.latest(major, minor).map(|v| v.patch).unwrap_or(0);
        // pkgs.k8s.io's revisions: `1.35.3-1.1` (deb), `1.35.3-150500.1.1` (rpm).
        let format = if format == "rpm" {
            "{version}-150500.1.1"
        } else {
            "{version}-1.1"
        };
        (0..=latest)
            .rev()
            .map(|p| {
                upgraded_planner::catalog::package_version(format, Version::new(major, minor, p))
            })
            .collect()
    }

    /// `dpkg-query -W -f='${Version}' PKG`: the installed version, no newline.
    fn dpkg_query(&self, a: &[&str]) -> Out {
        let st = self.state();
        match a {
            ["-W", format, pkg] if format.starts_with("-f=") => match st.packages.get(*pkg) {
                Some(v) => ok(v.clone()),
                None => fail(1, format!("dpkg-query: no packages found matching {pkg}\n")),
            },
            _ => fail(2, format!("dpkg-query: unsupported call {a:?}\n")),
        }
    }

    /// `1.34.6-1.1` → v1.34.6.
    fn package_release(v: &str) -> Option<Version> {
        format!("v{}", v.split('-').next()?).parse().ok()
    }

    fn install(&self, specs: &[(&str, &str)], allow_held: bool, format: &str) -> Out {
        self.install_allowing(specs, allow_held, true, format)
    }

    /// apt's checks, in apt's words: a held package changed needs
    /// `--allow-change-held-packages`, an older version `--allow-downgrades`.
    fn install_allowing(
        &self,
        specs: &[(&str, &str)],
        allow_held: bool,
        allow_downgrades: bool,
        format: &str,
    ) -> Out {
        let mut st = self.state();
        let available = self.available(format);
        for (pkg, ver) in specs {
            if !PACKAGES.contains(pkg) {
                return fail(100, format!("E: Unable to locate package {pkg}\n"));
            }
            if !available.iter().any(|v| v == ver) {
                return fail(
                    100,
                    format!("E: Version '{ver}' for '{pkg}' was not found\n"),
                );
            }
            let current = st.packages.get(*pkg).cloned().unwrap_or_default();
            if st.holds.iter().any(|h| h == pkg) && current != *ver && !allow_held {
                return fail(
                    100,
                    "E: Held packages were changed and -y was used without --allow-change-held-packages.\n",
                );
            }
            let older = matches!(
                (Self::package_release(ver), Self::package_release(&current)),
                (Some(new), Some(old)) if new < old
            );
            if older && !allow_downgrades {
                return fail(
                    100,
                    "E: Packages were downgraded and -y was used without --allow-downgrades.\n",
                );
            }
        }
        let mut out = String::new();
        for (pkg, ver) in specs {
            let current = st
                .packages
                .insert(pkg.to_string(), ver.to_string())
                .unwrap_or_default();
            if current == *ver {
                out.push_str(&format!("{pkg} is already the newest version ({ver}).\n"));
            } else {
                out.push_str(&format!(
                    "Unpacking {pkg} ({ver}) over ({current}) ...\nSetting up {pkg} ({ver}) ...\n"
                ));
            }
        }
        match self.save(&st) {
            Ok(()) => ok(out),
            Err(e) => fail(100, format!("E: {e}\n")),
        }
    }

    fn apt_get(&self, a: &[&str]) -> Out {
        match a.iter().find(|s| !s.starts_with('-')) {
            Some(&"update") => match self.repo_minor() {
                Some((ma, mi)) => ok(format!(
                    "Hit:1 https://pkgs.k8s.io/core:/stable:/v{ma}.{mi}/deb  InRelease\nReading package lists...\n"
                )),
                None => fail(100, "E: no Kubernetes repository configured\n"),
            },
            Some(&"install") => {
                if !a.iter().any(|s| *s == "-y" || *s == "--yes" || *s == "-qy") {
                    return fail(1, "Do you want to continue? [Y/n] Abort.\n");
                }
                let allow = a.contains(&"--allow-change-held-packages");
                let downgrades = a.contains(&"--allow-downgrades");
                let specs: Vec<(&str, &str)> = a
                    .iter()
                    .filter(|s| !s.starts_with('-') && **s != "install")
                    .map(|s| s.split_once('=').unwrap_or((s, "")))
                    .collect();
                self.install_allowing(&specs, allow, downgrades, "deb")
            }
            _ => fail(100, format!("E: Invalid operation {a:?}\n")),
        }
    }

    fn apt_mark(&self, a: &[&str]) -> Out {
        let mut st = self.state();
        match a {
            ["showhold"] => ok(st
                .holds
                .iter()
                .map(|h| format!("{h}\n"))
                .collect::<String>()),
            ["hold", pkgs @ ..] | ["unhold", pkgs @ ..] => {
                let hold = a[0] == "hold";
                let mut out = String::new();
                for p in pkgs {
                    if !st.packages.contains_key(*p) {
                        return fail(100, format!("E: Unable to locate package {p}\n"));
                    }
                    let held = st.holds.iter().any(|h| h == p);
                    match (hold, held) {
                        (true, false) => {
                            st.holds.push(p.to_string());
                            out.push_str(&format!("{p} set on hold.\n"));
                        }
                        (true, true) => out.push_str(&format!("{p} was already set on hold.\n")),
                        (false, true) => {
                            st.holds.retain(|h| h != p);
                            out.push_str(&format!("Canceled hold on {p}.\n"));
                        }
                        (false, false) => out.push_str(&format!("{p} was already not on hold.\n")),
                    }
                }
                st.holds.sort();
                match self.save(&st) {
                    Ok(()) => ok(out),
                    Err(e) => fail(100, format!("E: {e}\n")),
                }
            }
            _ => fail(100, format!("E: unsupported apt-mark call {a:?}\n")),
        }
    }

    fn apt_cache(&self, a: &[&str]) -> Out {
        match a {
            ["madison", pkgs @ ..] => {
                let Some((ma, mi)) = self.repo_minor() else {
                    return ok("");
                };
                let mut out = String::new();
                for p in pkgs.iter().filter(|p| PACKAGES.contains(p)) {
                    for v in self.available("deb") {
                        out.push_str(&format!(
                            "   {p} | {v} | https://pkgs.k8s.io/core:/stable:/v{ma}.{mi}/deb  Packages\n"
                        ));
                    }
                }
                ok(out)
            }
            _ => fail(100, format!("E: unsupported apt-cache call {a:?}\n")),
        }
    }

    /// `dnf install -y kubelet-1.35.3-150500.1.1 --disableexcludes=kubernetes`; `dnf list`.
    fn dnf(&self, a: &[&str]) -> Out {
        match a.iter().find(|s| !s.starts_with('-')) {
            Some(&"install") => {
                let specs: Vec<(&str, &str)> = a
                    .iter()
                    .filter(|s| !s.starts_with('-') && **s != "install")
                    .filter_map(|s| {
                        PACKAGES
                            .iter()
                            .find_map(|p| s.strip_prefix(&format!("{p}-")).map(|v| (*p, v)))
                    })
                    .collect();
                // dnf has no holds: the repository's `exclude=` is bypassed explicitly.
                let allow = a.contains(&"--disableexcludes=kubernetes");
                self.install(&specs, allow, "rpm")
            }
            Some(&"list") => ok(self
                .available("rpm")
                .iter()
                .map(|v| format!("kubelet.x86_64  {v}  kubernetes\n"))
                .collect::<String>()),
            _ => fail(1, format!("dnf: unsupported call {a:?}\n")),
        }
    }

    fn systemctl(&self, a: &[&str]) -> Out {
        let mut st = self.state();
        match a {
            ["daemon-reload"] => {
                st.reloaded = true;
                match self.save(&st) {
                    Ok(()) => ok(""),
                    Err(e) => fail(1, format!("{e}\n")),
                }
            }
            ["restart", "kubelet"] | ["restart", "kubelet.service"] => {
                let Some(v) = self.installed("kubelet") else {
                    return fail(
                        5,
                        "Failed to restart kubelet.service: Unit kubelet.service not found.\n",
                    );
                };
                if let Err(e) = self.sim(
                    &self.node_path("kubelet-restart"),
                    &serde_json::json!({"version": v.to_string()}),
                ) {
                    return fail(1, format!("Job for kubelet.service failed: {e}\n"));
                }
                st.kubelet_running = v.to_string();
                st.reloaded = false;
                match self.save(&st) {
                    Ok(()) => ok(""),
                    Err(e) => fail(1, format!("{e}\n")),
                }
            }
            ["is-active", ..] => ok("active\n"),
            ["restart" | "start" | "stop" | "enable" | "disable", ..] => ok(""),
            _ => fail(1, format!("systemctl: unsupported call {a:?}\n")),
        }
    }
}

fn crictl(a: &[&str]) -> Out {
    match a {
        ["version"] => ok(
            "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  v1.7.24\nRuntimeApiVersion:  v1\n",
        ),
        ["info", ..] => ok(
            "{\"status\":{\"conditions\":[{\"type\":\"RuntimeReady\",\"status\":true},{\"type\":\"NetworkReady\",\"status\":true}]}}\n",
        ),
        ["ps", rest @ ..] => {
            // The control plane's static pods: etcd is the real process the node runs while
            // its manifest is in place; the others are their manifests.
            let name = rest
                .windows(2)
                .find(|w| w[0] == "--name")
                .map(|w| w[1].trim_start_matches('^').trim_end_matches('$'));
            let mut out = String::new();
            for (i, c) in [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ]
            .into_iter()
            .enumerate()
            {
                if name.is_some_and(|n| n != c) {
                    continue;
                }
                let running = if c == "etcd" {
                    etcd_running()
                } else {
                    Path::new(&format!("/etc/kubernetes/manifests/{c}.yaml")).exists()
                };
                if running {
                    out.push_str(&format!("{:013x}\n", i + 1));
                }
            }
            ok(out)
        }
        _ => ok(""),
    }
}

/// Whether the node's etcd runs (the lab's static-pod loop keeps its pid).
fn etcd_running() -> bool {
    let ctl = std::env::var("LAB_CTL").unwrap_or_else(|_| "/var/lib/lab".into());
    std::fs::read_to_string(Path::new(&ctl).join("etcd.pid"))
        .ok()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{}/stat", p.trim())).ok())
        .is_some_and(|stat| stat.split(' ').nth(2) != Some("Z"))
}

/// Percent-encodes a path segment (node names may hold anything in a test).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
