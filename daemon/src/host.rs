//! The host probes: what the operator's HTTP and command checks, Prometheus and the ingress
//! check reach, from the daemon's own host. HTTP is plain `http://` over TCP (or, in the
//! harness, the sim's router in process); a command runs without a shell under coreutils'
//! `timeout`, on the blocking pool, its output bounded.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::ports::{BoxFut, CommandEnd, HostProbes, HttpTrouble, PortError};
use crate::simagent::Exchange;

/// The most of a body or of a command's output kept.
const MAX_OUTPUT: usize = 64 * 1024;

/// The daemon's host probes.
#[derive(Clone, Default)]
pub struct Host {
    /// Requests to `http://sim.in-process/…` go to the sim's router (the harness).
    in_process: Option<Exchange>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("in_process", &self.in_process.is_some())
            .finish()
    }
}

/// The authority that names the sim's router in process.
pub const IN_PROCESS: &str = "sim.in-process";

impl Host {
    pub fn new() -> Host {
        Host::default()
    }

    pub fn in_process(exchange: Exchange) -> Host {
        Host {
            in_process: Some(exchange),
        }
    }
}

/// `http://authority/path` split; any other scheme is refused (the policy refuses it first).
fn split(url: &str) -> Result<(&str, String), HttpTrouble> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        HttpTrouble::NoAnswer(format!(
            "{url}: only http:// URLs are probed (use a command check with curl for https)"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        return Err(HttpTrouble::NoAnswer(format!("{url}: no host")));
    }
    Ok((authority, path))
}

fn bounded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(MAX_OUTPUT);
    bytes
}

impl HostProbes for Host {
    fn http_get<'a>(
        &'a self,
        url: &'a str,
        timeout: Duration,
    ) -> BoxFut<'a, Result<(u16, Vec<u8>), HttpTrouble>> {
        Box::pin(async move {
            let (authority, path) = split(url)?;
            let req = Request::get(path.as_str())
                .header("host", authority)
                .header("accept", "application/json")
                .body(Full::new(Bytes::new()))
                .map_err(|e| HttpTrouble::NoAnswer(format!("{url}: {e}")))?;
            if authority == IN_PROCESS
                && let Some(exchange) = &self.in_process
            {
                let (status, body) = exchange(req).await.map_err(HttpTrouble::NoAnswer)?;
                return Ok((status.as_u16(), bounded(body.to_vec())));
            }
            let answer = async {
                crate::simagent::tcp_exchange(authority, req)
                    .await
                    .map(|(status, body)| (status.as_u16(), bounded(body.to_vec())))
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(a)) => Ok(a),
                Ok(Err(e)) => Err(HttpTrouble::NoAnswer(format!("{url}: {e}"))),
                Err(_) => Err(HttpTrouble::TimedOut),
            }
        })
    }

    fn command<'a>(
        &'a self,
        argv: &'a [String],
        env: &'a [(String, String)],
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandEnd, PortError>> {
        let argv = argv.to_vec();
        let env = env.to_vec();
        Box::pin(async move {
            if argv.is_empty() {
                return Err(PortError::fatal("a command check with no argv"));
            }
            // coreutils' timeout ends it (TERM, then KILL 5 s later) whoever waits: no timer
            // of ours, so virtual time cannot fire it early. Exit 124 means it timed out.
            let secs = timeout.as_secs().max(1).to_string();
            let run = move || {
                std::process::Command::new("timeout")
                    .args(["-k", "5", &secs])
                    .args(&argv)
                    .envs(env)
                    .stdin(std::process::Stdio::null())
                    .output()
            };
            let out = tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| PortError::retryable(format!("the command's task: {e}")))?
                .map_err(|e| PortError::fatal(format!("the command could not start: {e}")))?;
            let mut text = bounded(out.stdout);
            text.extend(bounded(out.stderr));
            let code = out.status.code();
            Ok(CommandEnd {
                exit_code: code,
                output: String::from_utf8_lossy(&bounded(text)).into_owned(),
                timed_out: matches!(code, Some(124 | 137)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_split() {
        assert_eq!(
            split("http://127.0.0.1:9090/api/v1/targets").ok(),
            Some(("127.0.0.1:9090", "/api/v1/targets".to_string()))
        );
        assert_eq!(
            split("http://prom:9090").ok(),
            Some(("prom:9090", "/".to_string()))
        );
        assert!(
            matches!(split("https://shop/healthz"), Err(HttpTrouble::NoAnswer(w)) if w.contains("curl"))
        );
        assert!(split("http:///x").is_err());
    }

    #[tokio::test]
    async fn a_command_runs_without_a_shell_and_says_how_it_ended() {
        let host = Host::new();
        let t = Duration::from_secs(10);
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = host
            .command(
                &argv(&["sh", "-c", "echo \"$X\"; exit 1"]),
                &[("X".into(), "$(id)".into())],
                t,
            )
            .await
            .expect("ran");
        assert_eq!((ok.exit_code, ok.output.as_str()), (Some(1), "$(id)\n"));
        let slow = host
            .command(&argv(&["sleep", "30"]), &[], Duration::from_secs(1))
            .await
            .expect("ran");
        assert!(slow.timed_out, "{slow:?}");
        let missing = host
            .command(&argv(&["/nonexistent/check"]), &[], t)
            .await
            .expect("timeout ran");
        assert_eq!(missing.exit_code, Some(127), "{missing:?}");
    }
}
