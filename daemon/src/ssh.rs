//! Node commands over SSH (the `openssh` crate, native multiplexing).
//!
//! One master connection per node, checked before each use and re-opened when it is gone.
//! The user's ssh_config applies (or `config_file`), so `Host` aliases, `User`, `Port` and
//! `ProxyJump` bastions work as they do for `ssh` itself; host keys are checked strictly
//! unless the operator opts into accepting new ones.
//!
//! Every script runs as `timeout -k 10 N sh -c '<script>'`: the crate has no per-command
//! timeout, and a command whose channel is dropped keeps running on the node. At most
//! `max_sessions` commands run on one node at once, below sshd's `MaxSessions` (10).
//!
//! Masters live in a short per-process control directory and exit after `control_persist`
//! idle seconds, so a `kill -9` of the daemon leaves no `ssh -M` behind for long; the next
//! daemon removes directories of dead processes.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use upgraded_events::fault::FailureKind;
use upgraded_events::inventory::check_node_name;
use upgraded_events::plan::EtcdRestoreStage;
use upgraded_events::{Facts, Host};
use upgraded_planner::render::shell_quote;

use crate::ports::{BoxFut, CommandOutput, NodeExecutor, PortError, RemoteCommand};
use crate::remote::{Scripts, kubeadm_backups, parse_facts, preflight_verdict, snapshot_revision};

/// sshd's default `MaxSessions`: one more concurrent channel than this fails.
pub const SSHD_MAX_SESSIONS: usize = 10;

/// Unix socket paths are limited to 108 bytes; the crate adds `/.ssh-connectionXXXXXX/master`.
const SOCKET_SUFFIX_LEN: usize = 30;
const SOCKET_PATH_MAX: usize = 107;
const _: () = assert!(
    SOCKET_PATH_MAX - SOCKET_SUFFIX_LEN == 77,
    "the error message says 77"
);

/// Extra seconds `timeout` gives a command after TERM before KILL.
const KILL_AFTER_SECS: u64 = 10;

#[derive(Debug, Clone)]
pub struct SshOptions {
    /// `-F`: this file instead of `~/.ssh/config`.
    pub config_file: Option<PathBuf>,
    pub user: Option<String>,
    /// `-i` (and only that key).
    pub identity: Option<PathBuf>,
    /// `UserKnownHostsFile`.
    pub known_hosts: Option<PathBuf>,
    /// Accept and remember unknown host keys (`StrictHostKeyChecking=accept-new`) instead of
    /// refusing them. A changed key is always refused.
    pub accept_new_host_keys: bool,
    /// Where this process's control directory is created (`<root>/<pid>`).
    pub control_root: PathBuf,
    /// A master with no session for this long exits by itself.
    pub control_persist_secs: u64,
    /// Concurrent commands per node (1 to 9).
    pub max_sessions: usize,
    pub connect_timeout_secs: u64,
    /// Keepalive interval; a dead peer is noticed after about three of them.
    pub alive_interval_secs: u64,
    /// Bytes of stdout and of stderr kept in an event (the tail; the digest covers all).
    pub output_limit: usize,
    /// Where etcd snapshots are copied to (`<dir>/<node>/<file>`).
    pub snapshot_copies: PathBuf,
}

impl SshOptions {
    pub fn new(control_root: PathBuf, snapshot_copies: PathBuf) -> SshOptions {
        SshOptions {
            config_file: None,
            user: None,
            identity: None,
            known_hosts: None,
            accept_new_host_keys: false,
            control_root,
            control_persist_secs: 60,
            max_sessions: 4,
            connect_timeout_secs: 10,
            alive_interval_secs: 5,
            output_limit: 2048,
            snapshot_copies,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshSetupError {
    #[error(
        "max sessions per node must be 1 to 9, below sshd's MaxSessions ({SSHD_MAX_SESSIONS}); got {0}"
    )]
    MaxSessions(usize),
    #[error("control directory {0:?} is too long for a unix socket path (keep it under 77 bytes)")]
    ControlDirTooLong(PathBuf),
    #[error("control directory {path:?}: {source}")]
    ControlDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control persistence must be at least 1 second")]
    ControlPersist,
}

struct Conn {
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    permits: Semaphore,
}

pub struct SshNodes {
    opts: SshOptions,
    builder: SessionBuilder,
    control_dir: PathBuf,
    scripts: Scripts,
    conns: std::sync::Mutex<HashMap<String, Arc<Conn>>>,
}

impl std::fmt::Debug for SshNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshNodes")
            .field("control_dir", &self.control_dir)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What one remote script produced.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// `<root>/<pid>`, after removing the directories of processes that are gone.
fn control_dir(root: &Path) -> Result<PathBuf, SshSetupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SshSetupError::ControlDir { path, source }
    };
    std::fs::create_dir_all(root).map_err(io(root))?;
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    if dir.as_os_str().len() + SOCKET_SUFFIX_LEN > SOCKET_PATH_MAX {
        return Err(SshSetupError::ControlDirTooLong(dir));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    }
    Ok(dir)
}

/// The last `limit` bytes as text, marked when cut.
fn tail(bytes: &[u8], limit: usize) -> String {
    if bytes.len() <= limit {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let cut = bytes.len() - limit;
    let text = String::from_utf8_lossy(&bytes[cut..]);
    format!("…[{cut} bytes cut]…{}", text.trim_start_matches('\u{fffd}'))
}

/// Copies `from` to `to` and returns the sha256 of what went through.
async fn stream_hashed(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).await?;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ran {
    /// Bounded output and its digests, for the outcome event.
    fn facts(&self, limit: usize) -> Facts {
        let mut f = Facts::new();
        f.insert("stdout".into(), tail(&self.stdout, limit));
        f.insert("stderr".into(), tail(&self.stderr, limit));
        f.insert("stdout_sha256".into(), sha256_hex(&self.stdout));
        f.insert("stderr_sha256".into(), sha256_hex(&self.stderr));
        if let Some(c) = self.code {
            f.insert("exit".into(), c.to_string());
        }
        f
    }

    fn last_stderr_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output")
            .trim()
            .chars()
            .take(300)
            .collect()
    }
}

/// The crate's errors in an operator's words.
fn translate(node: &str, e: &openssh::Error) -> PortError {
    let detail = {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    };
    match e {
        openssh::Error::Connect(_) | openssh::Error::Master(_) => {
            if detail.contains("Host key verification failed")
                || detail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || detail.contains("No ED25519 host key is known")
            {
                PortError::fatal(format!(
                    "node {node}: its SSH host key is unknown or does not match known_hosts; verify the key and add it (the daemon does not trust keys blindly): {detail}"
                ))
            } else if detail.contains("Permission denied") {
                PortError::fatal(format!(
                    "node {node}: SSH login refused (check the user and key): {detail}"
                ))
            } else {
                // Nothing was sent: the node is unreachable for now (its own outage).
                PortError::retryable(format!("node {node}: cannot connect over SSH: {detail}"))
                    .with_kind(FailureKind::Unreachable)
            }
        }
        // Sent, and the answer lost: `script` says what that is for the command.
        openssh::Error::SshMux(_)
        | openssh::Error::Disconnected
        | openssh::Error::RemoteProcessTerminated => PortError::retryable(format!(
            "node {node}: the SSH connection was lost (node down, frozen or unreachable): {detail}"
        ))
        .with_kind(FailureKind::InDoubt),
        _ => PortError::retryable(format!("node {node}: SSH: {detail}"))
            .with_kind(FailureKind::InDoubt),
    }
}

impl SshNodes {
    pub fn new(opts: SshOptions, scripts: Scripts) -> Result<SshNodes, SshSetupError> {
        if opts.max_sessions == 0 || opts.max_sessions >= SSHD_MAX_SESSIONS {
            return Err(SshSetupError::MaxSessions(opts.max_sessions));
        }
        let persist = usize::try_from(opts.control_persist_secs)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or(SshSetupError::ControlPersist)?;
        let control_dir = control_dir(&opts.control_root)?;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if opts.accept_new_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .control_directory(&control_dir)
        .control_persist(ControlPersist::IdleFor(persist))
        .connect_timeout(Duration::from_secs(opts.connect_timeout_secs.max(1)))
        .server_alive_interval(Duration::from_secs(opts.alive_interval_secs.max(1)));
        if let Some(c) = &opts.config_file {
            b.config_file(c);
        }
        if let Some(u) = &opts.user {
            b.user(u.clone());
        }
        if let Some(k) = &opts.identity {
            b.keyfile(k);
        }
        if let Some(k) = &opts.known_hosts {
            b.user_known_hosts_file(k);
        }
        Ok(SshNodes {
            opts,
            builder: b,
            control_dir,
            scripts,
            conns: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn control_dir(&self) -> &Path {
        &self.control_dir
    }

    /// Closes every master (a clean shutdown; a killed daemon's masters idle out).
    pub async fn close(&self) {
        let conns: Vec<Arc<Conn>> = match self.conns.lock() {
            Ok(mut m) => m.drain().map(|(_, c)| c).collect(),
            Err(_) => return,
        };
        for c in conns {
            if let Some(s) = c.session.lock().await.take()
                && let Ok(s) = Arc::try_unwrap(s)
            {
                let _ = s.close().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }

    fn conn(&self, node: &str) -> Arc<Conn> {
        let mut m = match self.conns.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        m.entry(node.to_string())
            .or_insert_with(|| {
                Arc::new(Conn {
                    session: tokio::sync::Mutex::new(None),
                    permits: Semaphore::new(self.opts.max_sessions),
                })
            })
            .clone()
    }

    /// The node's live session, connecting (again) when there is none or it is gone.
    async fn session(&self, node: &str, conn: &Conn) -> Result<Arc<Session>, PortError> {
        let mut slot = conn.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.check().await.is_ok() {
                return Ok(s.clone());
            }
            tracing::info!(node, "SSH master gone; reconnecting");
        }
        *slot = None;
        let limit = Duration::from_secs(self.opts.connect_timeout_secs.max(1) + 5);
        let s = match tokio::time::timeout(limit, self.builder.connect_mux(node)).await {
            Ok(r) => r.map_err(|e| translate(node, &e))?,
            Err(_) => {
                return Err(PortError::retryable(format!(
                    "node {node}: no SSH connection within {}s",
                    limit.as_secs()
                )));
            }
        };
        let s = Arc::new(s);
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn forget(&self, conn: &Conn) {
        *conn.session.lock().await = None;
    }

    /// Runs `line` (already quoted) on the node, bounded by `timeout` on both ends.
    async fn exec(
        &self,
        node: &str,
        conn: &Conn,
        line: &str,
        timeout: Duration,
    ) -> Result<Ran, PortError> {
        let session = self.session(node, conn).await?;
        let secs = timeout.as_secs().max(1);
        let wrapped = format!("timeout -k {KILL_AFTER_SECS} {secs} {line}");
        let fut = async {
            session
                .raw_command(&wrapped)
                .stdin(openssh::Stdio::null())
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::piped())
                .output()
                .await
        };
        let grace = Duration::from_secs(secs + KILL_AFTER_SECS + 5);
        match tokio::time::timeout(grace, fut).await {
            Err(_) => {
                self.forget(conn).await;
                Err(PortError::retryable(format!(
                    "node {node}: no answer over SSH within {}s (the node's `timeout` ends the command there)",
                    grace.as_secs()
                ))
                .with_kind(FailureKind::InDoubt))
            }
            Ok(Err(e)) => {
                self.forget(conn).await;
                Err(translate(node, &e))
            }
            Ok(Ok(out)) => Ok(Ran {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            }),
        }
    }

    /// A rendered script, run with `sh -c`; a non-zero exit is an error carrying the output.
    async fn script(
        &self,
        node: &str,
        conn: &Conn,
        cmd: &RemoteCommand,
        timeout: Duration,
    ) -> Result<(Facts, Facts), PortError> {
        let script = self.scripts.render(cmd);
        let line = format!("sh -c {}", shell_quote(&script));
        // A lost answer is in doubt for a command that changes the node, and only the node
        // unreachable for a read-only one (`Scripts::lost_answer`).
        let lost = |e: PortError| match e.kind {
            FailureKind::InDoubt => {
                let kind = Scripts::lost_answer(cmd);
                e.with_kind(kind)
            }
            _ => e,
        };
        let ran = match self.exec(node, conn, &line, timeout).await {
            // A lost connection before anything ran: a read-only check may simply go again.
            Err(e) if e.is_retryable() && Scripts::read_only(cmd) => {
                tracing::info!(node, error = %e, "retrying a read-only command once");
                self.exec(node, conn, &line, timeout).await.map_err(lost)?
            }
            other => other.map_err(lost)?,
        };
        let output = ran.facts(self.opts.output_limit);
        match ran.code {
            Some(0) => {
                let stdout = String::from_utf8_lossy(&ran.stdout);
                let mut facts = parse_facts(&stdout);
                if matches!(
                    cmd,
                    RemoteCommand::KubeadmUpgrade { .. } | RemoteCommand::KubeadmDowngrade { .. }
                ) {
                    facts.extend(kubeadm_backups(&stdout));
                }
                Ok((facts, output))
            }
            Some(124) | Some(137) => {
                let mut e = PortError::retryable(format!(
                    "node {node}: {} did not finish within {}s and was stopped on the node",
                    cmd.name(),
                    timeout.as_secs()
                ));
                e.facts = output;
                Err(e.with_fact("timed_out", "true"))
            }
            code => {
                let mut e = PortError::retryable(format!(
                    "node {node}: {} failed (exit {}): {}",
                    cmd.name(),
                    code.map_or("by signal".to_string(), |c| c.to_string()),
                    ran.last_stderr_line()
                ));
                e.facts = output;
                Err(e)
            }
        }
    }

    /// Streams the snapshot off the node into the data dir and checks its digest.
    async fn copy_snapshot(
        &self,
        node: &str,
        conn: &Conn,
        remote: &str,
        want_sha: &str,
        timeout: Duration,
    ) -> Result<PathBuf, PortError> {
        let name = Path::new(remote)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with("snapshot-")
                    && n.ends_with(".db")
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
            .ok_or_else(|| {
                PortError::fatal(format!(
                    "node {node}: unexpected snapshot path {remote:?} reported"
                ))
            })?;
        let dir = self.opts.snapshot_copies.join(node);
        let local = dir.join(&name);
        let io = |e: std::io::Error| {
            PortError::retryable(format!("copying the snapshot to {}: {e}", local.display()))
        };
        // The snapshot holds every Secret of the cluster: private whatever the umask.
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .await
            .map_err(io)?;
        if let Ok(bytes) = tokio::fs::read(&local).await
            && sha256_hex(&bytes) == want_sha
        {
            return Ok(local);
        }
        let session = self.session(node, conn).await?;
        let line = format!(
            "timeout -k {KILL_AFTER_SECS} {} cat -- {}",
            timeout.as_secs().max(1),
            shell_quote(remote)
        );
        let tmp = dir.join(format!("{name}.part"));
        let copy = async {
            let mut child = session
                .raw_command(&line)
                .stdin(openssh::Stdio::null())
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::null())
                .spawn()
                .await
                .map_err(|e| translate(node, &e))?;
            let mut out = child
                .stdout()
                .take()
                .ok_or_else(|| PortError::retryable("no stdout from cat"))?;
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .await
                .map_err(io)?;
            let sha = stream_hashed(&mut out, &mut file).await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            let status = child.wait().await.map_err(|e| translate(node, &e))?;
            Ok::<_, PortError>((status, sha))
        };
        let (status, got) = match tokio::time::timeout(timeout + Duration::from_secs(5), copy).await
        {
            Ok(r) => r?,
            Err(_) => {
                self.forget(conn).await;
                return Err(PortError::retryable(format!(
                    "node {node}: copying {remote} took longer than {}s",
                    timeout.as_secs()
                )));
            }
        };
        if !status.success() || got != want_sha {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(PortError::retryable(format!(
                "node {node}: the copy of {remote} is damaged (sha256 {got}, the node reported {want_sha})"
            )));
        }
        tokio::fs::rename(&tmp, &local).await.map_err(io)?;
        Ok(local)
    }

    /// Puts the daemon's copy of a snapshot (`local`, one of its own copies) on the node as
    /// `remote`, unless the node already holds it; the digest is checked on both ends.
    async fn push_snapshot(
        &self,
        node: &str,
        conn: &Conn,
        local: &str,
        want_sha: &str,
        remote: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        // Only the daemon's own copies leave the data dir, whatever a record says.
        let ours = tokio::fs::canonicalize(&self.opts.snapshot_copies)
            .await
            .ok();
        let path = tokio::fs::canonicalize(local).await.map_err(|e| {
            PortError::fatal(format!(
                "the daemon's copy of the snapshot, {local}, cannot be read: {e}"
            ))
        })?;
        if !ours.is_some_and(|o| path.starts_with(o)) {
            return Err(PortError::fatal(format!(
                "{local} is not one of the daemon's snapshot copies"
            )));
        }
        let have = self
            .exec(
                node,
                conn,
                &format!("sha256sum -- {}", shell_quote(remote)),
                timeout,
            )
            .await?;
        if String::from_utf8_lossy(&have.stdout)
            .split_whitespace()
            .next()
            == Some(want_sha)
        {
            return Ok(());
        }
        let dir = Path::new(remote)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/".into());
        let line = format!(
            "timeout -k {KILL_AFTER_SECS} {secs} sh -c {script}",
            secs = timeout.as_secs().max(1),
            script = shell_quote(&format!(
                "umask 077 && mkdir -p {d} && cat > {f}.part && mv {f}.part {f}",
                d = shell_quote(&dir),
                f = shell_quote(remote)
            ))
        );
        let session = self.session(node, conn).await?;
        let io =
            |e: std::io::Error| PortError::retryable(format!("node {node}: pushing {local}: {e}"));
        let push = async {
            let mut child = session
                .raw_command(&line)
                .stdin(openssh::Stdio::piped())
                .stdout(openssh::Stdio::null())
                .stderr(openssh::Stdio::null())
                .spawn()
                .await
                .map_err(|e| translate(node, &e))?;
            let mut input = child
                .stdin()
                .take()
                .ok_or_else(|| PortError::retryable("no stdin to the node"))?;
            let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
            let sha = stream_hashed(&mut file, &mut input).await.map_err(io)?;
            input.shutdown().await.map_err(io)?;
            drop(input);
            let status = child.wait().await.map_err(|e| translate(node, &e))?;
            Ok::<_, PortError>((status, sha))
        };
        let (status, got) = match tokio::time::timeout(timeout + Duration::from_secs(5), push).await
        {
            Ok(r) => r?,
            Err(_) => {
                self.forget(conn).await;
                return Err(PortError::retryable(format!(
                    "node {node}: pushing {local} took longer than {}s",
                    timeout.as_secs()
                )));
            }
        };
        if got != want_sha {
            return Err(PortError::fatal(format!(
                "the daemon's copy of the snapshot, {local}, is damaged (sha256 {got}, recorded {want_sha}): restore from another copy by hand"
            )));
        }
        if !status.success() {
            return Err(PortError::retryable(format!(
                "node {node}: writing {remote} failed ({status})"
            )));
        }
        Ok(())
    }

    async fn run_command(
        &self,
        node: &str,
        cmd: &RemoteCommand,
        timeout: Duration,
    ) -> Result<CommandOutput, PortError> {
        // A node name is an SSH destination: it must be a plain DNS name (no options, no
        // `user@`, nothing a shell or ssh would read as syntax).
        check_node_name(node).map_err(|e| PortError::fatal(format!("node {node:?}: {e}")))?;
        let conn = self.conn(node);
        let _permit = conn
            .permits
            .acquire()
            .await
            .map_err(|_| PortError::fatal("the SSH executor is shut down"))?;
        if let RemoteCommand::EtcdRestore(EtcdRestoreStage::Restore(r)) = cmd
            && !r.snapshot_sha256.is_empty()
        {
            let remote = format!(
                "{}/restore-{}.db",
                self.scripts.node.etcd_snapshot_dir, r.snapshot_sha256
            );
            self.push_snapshot(
                node,
                &conn,
                &r.snapshot_copy,
                &r.snapshot_sha256,
                &remote,
                timeout,
            )
            .await?;
        }
        let (mut facts, output) = self.script(node, &conn, cmd, timeout).await?;
        match cmd {
            RemoteCommand::Preflight { target } => {
                if let Err(mut e) = preflight_verdict(
                    node,
                    *target,
                    &facts,
                    self.scripts.node.max_disk_used_percent,
                ) {
                    e.facts.extend(facts);
                    return Err(e);
                }
            }
            RemoteCommand::EtcdSnapshot { .. } => {
                let path = facts.get("path").cloned().unwrap_or_default();
                let sha = facts.get("sha256").cloned().unwrap_or_default();
                if sha.len() != 64 {
                    return Err(PortError::retryable(format!(
                        "node {node}: the snapshot script reported no digest"
                    )));
                }
                let local = self
                    .copy_snapshot(node, &conn, &path, &sha, timeout)
                    .await?;
                facts.insert("local_copy".into(), local.display().to_string());
                if let Some(rev) = facts.get("status").and_then(|s| snapshot_revision(s)) {
                    facts.insert("revision".into(), rev.to_string());
                }
                facts.remove("status");
            }
            RemoteCommand::InstalledKubelet | RemoteCommand::InstallPackages { .. } => {
                let ok = facts
                    .get("installed")
                    .is_some_and(|v| v.parse::<upgraded_events::Version>().is_ok());
                if !ok {
                    return Err(PortError::retryable(format!(
                        "node {node}: `kubelet --version` gave no version"
                    )));
                }
            }
            _ => {}
        }
        // Output of commands that change the node is kept (bounded); checks keep their facts.
        if !Scripts::read_only(cmd) {
            facts.extend(output);
        }
        Ok(CommandOutput { facts })
    }
}

impl NodeExecutor for SshNodes {
    fn run<'a>(
        &'a self,
        host: &'a Host,
        cmd: &'a RemoteCommand,
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>> {
        let node = host.as_str();
        Box::pin(self.run_command(node, cmd, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_and_digested() {
        let ran = Ran {
            code: Some(1),
            stdout: vec![b'x'; 5000],
            stderr: b"E: broken\n".to_vec(),
        };
        let f = ran.facts(100);
        assert!(f["stdout"].starts_with("…[4900 bytes cut]…"));
        assert_eq!(f["stdout"].chars().filter(|c| *c == 'x').count(), 100);
        assert_eq!(f["stderr"], "E: broken\n");
        assert_eq!(f["stdout_sha256"], sha256_hex(&[b'x'; 5000]));
        assert_eq!(ran.last_stderr_line(), "E: broken");
    }

    #[test]
    fn setup_refuses_bad_limits_and_long_control_paths() {
        let tmp = tempfile::tempdir().expect("tmp");
        let scripts = Scripts::of(&Default::default());
        let mut o = SshOptions::new(tmp.path().join("ssh"), tmp.path().join("etcd"));
        o.max_sessions = SSHD_MAX_SESSIONS;
        assert!(matches!(
            SshNodes::new(o.clone(), scripts.clone()),
            Err(SshSetupError::MaxSessions(10))
        ));
        o.max_sessions = 4;
        o.control_root = tmp.path().join("x".repeat(90));
        assert!(matches!(
            SshNodes::new(o.clone(), scripts.clone()),
            Err(SshSetupError::ControlDirTooLong(_))
        ));
        o.control_root = tmp.path().join("ssh");
        std::fs::create_dir_all(tmp.path().join("ssh/999999999")).expect("stale dir");
        let nodes = SshNodes::new(o, scripts).expect("ok");
        assert!(
            !tmp.path().join("ssh/999999999").exists(),
            "a dead process's dir is removed"
        );
        assert!(
            nodes
                .control_dir()
                .ends_with(std::process::id().to_string())
        );
    }
}
