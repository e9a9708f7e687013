//! `upgraded --ha` (issue 28): one instance's term, from the lease's window to the engine.
//!
//! Level-triggered: whenever the window (`lease::Leading`) or the engine changes, the
//! supervisor compares what is with what should be. The window open and no engine: the
//! local copy is caught up with the replicated log (and checked against it), then the
//! engine resumes like after a crash (`Daemon::recover`: `RunRecovered`, steps in doubt
//! probed before they are redone; the log puts the term's `LeaderChanged` first). The
//! window closed (fenced, deposed, stopped) and an engine: it is stopped where it stands, as
//! a dying process would be. An engine that fails because the log refused its append (not
//! leading, no quorum) is stopped the same way; any other engine failure ends the process.
//!
//! It decides nothing of the lease (`events::lease` does) and nothing of the run (the
//! engine's `decide` does); it only starts and stops the engine and says how it stands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use upgraded_api::HaStatus;
use upgraded_events::lease::Change;

use crate::engine::{Daemon, EngineError};
use crate::lease::Leading;
use crate::log::LogError;
use crate::log::ha::{CatchUpError, HaLog};

/// How long a new leader waits for its copy to reach the replicated log's end.
const CATCH_UP: Duration = Duration::from_secs(30);

/// What the supervisor runs on.
#[derive(Debug)]
pub struct Term {
    pub instance: String,
    pub daemon: Arc<Daemon<HaLog>>,
    pub log: HaLog,
    pub leading: watch::Receiver<Leading>,
    pub changes: mpsc::UnboundedReceiver<Change>,
    pub fatal: mpsc::UnboundedReceiver<EngineError>,
    /// What `status` shows of this instance.
    pub view: watch::Sender<HaStatus>,
    /// An epoch found in the log at or above a new leader's (the lease stands it down).
    pub outranked: watch::Sender<u64>,
}

/// An engine failure that is the log refusing to take appends from this instance.
fn lost_the_log(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Log(LogError::NotLeading(_) | LogError::Replicated(_))
    )
}

/// Runs terms until the process ends; returns only an engine failure that is not about
/// leadership (the process exits on it, as without `--ha`).
pub async fn supervise(mut t: Term) -> Result<(), EngineError> {
    let mut running = false;
    // The epoch of the last term this instance acted in, and why the lease machine last
    // stepped down (the window closing and the reason reach us in either order).
    let mut term = 0;
    let mut why: Option<(u64, String)> = None;
    let mut retry_at = Instant::now();
    let mut note = "standby: following the replicated log".to_string();
    loop {
        let lead = t.leading.borrow_and_update().clone();
        let now = Instant::now();
        let may = lead.may_act(now);
        if running && !may {
            t.daemon.stop();
            running = false;
            note = stopped_note(term, why.as_ref());
            tracing::warn!(instance = %t.instance, "{note}");
        }
        if !running && may && now >= retry_at {
            match begin(&t, lead.epoch).await {
                Ok(()) => {
                    running = true;
                    term = lead.epoch;
                    why = None;
                    note = format!("leading in epoch {}", lead.epoch);
                }
                Err(e) => {
                    note = format!(
                        "holds the lease (epoch {}) but cannot lead yet: {e}",
                        lead.epoch
                    );
                    tracing::warn!(instance = %t.instance, "{note}");
                    retry_at = Instant::now() + Duration::from_secs(2);
                }
            }
        }
        if let Some(b) = t.log.broken() {
            note = format!("not following the replicated log: {b}");
        }
        publish(&t, running && lead.may_act(Instant::now()), &note, &lead);
        let wake = [lead.from, lead.until, Some(retry_at)]
            .into_iter()
            .flatten()
            .filter(|w| *w > Instant::now())
            .min()
            .map_or(Duration::from_millis(500), |w| {
                w.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(500));
        tokio::select! {
            r = t.leading.changed() => if r.is_err() { return Ok(()) },
            Some(c) = t.changes.recv() => {
                if let Change::SteppedDown { epoch, why: w } = c {
                    // Still running: the window's close is next, and its note says this.
                    if !running {
                        note = if epoch == term {
                            stopped_note(term, Some(&(epoch, w.clone())))
                        } else {
                            format!("standby: {w}")
                        };
                    }
                    why = Some((epoch, w));
                }
            }
            Some(e) = t.fatal.recv() => {
                if !lost_the_log(&e) {
                    return Err(e);
                }
                t.daemon.stop();
                running = false;
                note = format!("stopped acting: {e}");
                tracing::warn!(instance = %t.instance, "{note}");
                retry_at = Instant::now() + Duration::from_secs(1);
            }
            () = tokio::time::sleep(wake) => {}
        }
    }
}

/// Why this instance stopped acting in `term`: the lease machine's reason when it gave one
/// for that term.
fn stopped_note(term: u64, why: Option<&(u64, String)>) -> String {
    match why {
        Some((epoch, w)) if *epoch == term => format!(
            "stopped acting in epoch {term}: {w}; the run waits for the next leader, which resumes it"
        ),
        _ => format!(
            "stopped acting in epoch {term}: the lease's window closed (fenced or deposed); \
             the run waits for the next leader, which resumes it"
        ),
    }
}

/// A new term: the copy caught up and checked, then the engine resumed.
async fn begin(t: &Term, epoch: u64) -> Result<(), String> {
    match t.log.catch_up(epoch, CATCH_UP).await {
        Ok(()) => {}
        Err(CatchUpError::Outranked { top, .. }) => {
            t.outranked.send_replace(top);
            return Err(CatchUpError::Outranked { top, epoch }.to_string());
        }
        Err(e) => return Err(e.to_string()),
    }
    if !t.leading.borrow().may_act(Instant::now()) {
        return Err("the lease's window closed while catching up".into());
    }
    match t.daemon.recover().await {
        Ok(run) => {
            tracing::warn!(instance = %t.instance, epoch, run = ?run.map(|r| r.to_string()), "leading: resumed from the replicated log");
            Ok(())
        }
        Err(e) => {
            t.daemon.stop();
            Err(e.to_string())
        }
    }
}

/// What `status` and `/metrics` show of this instance: the lease's holder as the keeper
/// last learnt it, else the leader the log names last.
fn publish(t: &Term, acting: bool, note: &str, lead: &Leading) {
    let (leader, leader_epoch) = match &lead.holder {
        Some(h) => (Some(h.instance.clone()), Some(h.epoch)),
        None => t
            .daemon
            .status()
            .borrow()
            .as_ref()
            .and_then(|s| s.leader.clone())
            .map_or((None, None), |l| (Some(l.instance), Some(l.epoch))),
    };
    let view = HaStatus {
        instance: t.instance.clone(),
        acting,
        leader,
        leader_epoch,
        note: note.to_string(),
    };
    t.view.send_if_modified(|v| {
        let changed = *v != view;
        *v = view;
        changed
    });
}
