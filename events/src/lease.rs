//! Leadership of two or three daemons through a lease in a NATS KV bucket (issue 28): the
//! decisions only, with time as an input. The daemon makes the compare-and-set calls this
//! machine names (`create` when the key is free, `update` at the revision it holds, `delete`
//! on a clean stop), reports each result, and asks [`Lease::may_act`] before every node
//! command and every change through the API. It never decides from a read of the key: only
//! what a compare-and-set answered.
//!
//! Times are milliseconds of the daemon's monotonic clock. A renewal counts from the moment
//! it was *sent* (the server stored it later, so the key lives at least until then + TTL).
//! A leader stops acting at `renewed + ttl − margin` unless a renewal succeeded meanwhile
//! (self-fencing): by then the key may be about to expire and pass to another instance,
//! which acts only after its campaign delay. The old leader's last act is therefore at least
//! `margin + campaign delay` before the new one's first.

use std::collections::BTreeMap;
use std::fmt;

use crate::event::{Event, Record, RunId};

/// The lease's timing, as the operator set it (`upgraded --ha`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long the key lives after its last write (the bucket's `max_age`).
    pub ttl_ms: u64,
    /// How long a new leader waits after taking the lease before it acts.
    pub campaign_delay_ms: u64,
    /// How long before the TTL runs out a leader whose renewals fail stops acting.
    pub margin_ms: u64,
}

/// A configuration that cannot fence in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    #[error("the lease TTL must be at least 3s (it is {0} ms): renewals go every third of it")]
    TtlTooShort(u64),
    #[error(
        "the fencing margin ({margin} ms) must be more than 0 and at most a third of the TTL \
         ({ttl} ms), so a leader stops acting before its lease can expire and still has two \
         renewals to keep it"
    )]
    Margin { margin: u64, ttl: u64 },
}

impl LeaseConfig {
    /// Defaults for a weekend's run on a LAN: 15 s TTL, 5 s campaign delay, 3 s margin.
    pub const DEFAULT: LeaseConfig = LeaseConfig {
        ttl_ms: 15_000,
        campaign_delay_ms: 5_000,
        margin_ms: 3_000,
    };

    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        if self.ttl_ms < 3_000 {
            return Err(LeaseConfigError::TtlTooShort(self.ttl_ms));
        }
        if self.margin_ms == 0 || self.margin_ms > self.ttl_ms / 3 {
            return Err(LeaseConfigError::Margin {
                margin: self.margin_ms,
                ttl: self.ttl_ms,
            });
        }
        Ok(())
    }

    /// A renewal at most every third of the TTL.
    pub fn renew_every_ms(&self) -> u64 {
        self.ttl_ms / 3
    }
}

/// What the lease's value says: who holds it, in which epoch (one more than the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub instance: String,
    pub epoch: u64,
}

impl Holder {
    /// The key's value: `epoch=N instance=NAME`.
    pub fn encode(&self) -> String {
        format!("epoch={} instance={}", self.epoch, self.instance)
    }

    /// A value written by [`Holder::encode`]; `None` for anything else.
    pub fn decode(value: &str) -> Option<Holder> {
        let rest = value.strip_prefix("epoch=")?;
        let (epoch, instance) = rest.split_once(" instance=")?;
        let epoch = epoch.parse().ok()?;
        (!instance.is_empty()).then(|| Holder {
            instance: instance.to_string(),
            epoch,
        })
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (epoch {})", self.instance, self.epoch)
    }
}

/// Where a record stands against its run's epoch (that of the last takeover counted; 0
/// before any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It counts.
    Counts,
    /// A takeover (`LeaderChanged`) to this epoch, above the run's and its record's own: it
    /// counts, and the run is at this epoch from now on.
    Takeover(u64),
    /// A record of an epoch older than the run's: a deposed leader's, left out.
    Deposed,
    /// A `LeaderChanged` to an epoch not above the run's, or not its record's own: left out.
    FalseTakeover,
}

/// The one rule of epochs every fold keeps (`RunState::apply`, the timeline, and through
/// `EpochGate` the metrics, trace and notification folds).
pub fn standing(run_epoch: u64, r: &Record) -> Standing {
    if r.epoch < run_epoch {
        return Standing::Deposed;
    }
    match &r.event {
        Event::LeaderChanged { epoch, .. } if *epoch > run_epoch && *epoch == r.epoch => {
            Standing::Takeover(*epoch)
        }
        Event::LeaderChanged { .. } => Standing::FalseTakeover,
        _ => Standing::Counts,
    }
}

/// Which records of a log count, run by run, as `standing` says: for the folds that keep
/// no `RunState` (metrics, traces, notifications).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochGate {
    runs: BTreeMap<RunId, u64>,
}

impl EpochGate {
    /// Whether `r` counts; records must come in each run's order.
    pub fn admits(&mut self, r: &Record) -> bool {
        let epoch = self.runs.entry(r.run).or_default();
        match standing(*epoch, r) {
            Standing::Counts => true,
            Standing::Takeover(e) => {
                *epoch = e;
                true
            }
            Standing::Deposed | Standing::FalseTakeover => false,
        }
    }
}

/// An instance's name (`--instance`): it goes into the lease's value, the log and a
/// metric's label, so 1 to 63 letters, digits, `.`, `_` or `-`, not starting with `-`.
pub fn check_instance(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance name {:?}: use 1 to 63 letters, digits, '.', '_' or '-' (not starting \
             with '-'), such as the host's short name",
            name.escape_debug().to_string()
        ))
    }
}

/// Whether this instance takes an operator's write (start, pause, resume, abort,
/// rollback): only the leader that may act does. A standby's refusal names the leader to
/// send it to; a leader that may not act (fenced, or its campaign delay not over) says so.
pub fn write_refusal(me: &str, acting: bool, leader: Option<&Holder>) -> Option<String> {
    if acting {
        return None;
    }
    Some(match leader {
        Some(l) if l.instance == me => format!(
            "this instance ({me}) holds the lease (epoch {}) but may not act yet: its \
             campaign delay is not over, or its renewals failed (NATS unreachable or without \
             quorum) and it fenced itself; try again in a few seconds",
            l.epoch
        ),
        Some(l) => format!(
            "this instance ({me}) is a standby; the leader is {l}: send writes to the \
             upgradectl of that host (reads such as status, watch and timeline work here)"
        ),
        None => format!(
            "this instance ({me}) is a standby and no leader holds the lease right now (a \
             takeover is under way, or NATS has no quorum); try again in a few seconds"
        ),
    })
}

/// Where this instance stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not the leader: asks for the lease (`create`) at `retry_at`. `leader` is the holder the
    /// last refusal named, `epoch` the highest epoch known (the log's, or a holder's).
    Standby {
        epoch: u64,
        leader: Option<Holder>,
        retry_at: u64,
    },
    /// Holds the lease at `revision`, renewed (sent) at `renewed`; acts from `acts_at` on
    /// (the campaign delay after it took the lease).
    Leader {
        epoch: u64,
        revision: u64,
        renewed: u64,
        acts_at: u64,
    },
    /// Stopped (a clean shutdown): it released the lease, or will not renew it.
    Stopped,
}

/// The compare-and-set call to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Put the value if the key does not exist.
    Create(Holder),
    /// Put the value if the key's last revision is `revision`.
    Update { holder: Holder, revision: u64 },
    /// Delete the key if its last revision is `revision` (a clean stop).
    Release { revision: u64 },
}

/// What a call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `create` or `update` stored the value at `revision`; the call was sent at `sent`.
    Stored { revision: u64, sent: u64 },
    /// The key is held by someone else (`create` found it, or `update` found another
    /// revision): who, when the value could be read.
    Held(Option<Holder>),
    /// No answer (a timeout, no quorum): nothing is known.
    NoAnswer,
}

/// What happened to the role, for the daemon's log lines and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Took the lease: leader in `epoch` (acting after the campaign delay).
    Elected { epoch: u64 },
    /// Stopped acting in `epoch`, for `cause`; `why` in words.
    SteppedDown {
        epoch: u64,
        cause: Cause,
        why: String,
    },
}

/// Why a leader stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its renewals went unanswered past `ttl − margin` (NATS unreachable from it, or
    /// without a quorum).
    Fenced,
    /// Another instance holds the lease.
    Deposed,
    /// The log holds its epoch already (another's records).
    Outranked,
}

/// The lease machine of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub instance: String,
    pub config: LeaseConfig,
    pub role: Role,
    /// A call is on its way (no second one until it answers).
    pub pending: Option<Call>,
    /// The epoch it led last, until it learns who holds the lease after it (a fenced
    /// leader that finds another's lease has been deposed, and says so).
    pub led: Option<u64>,
    /// Since when its calls go unanswered (the first of them that got no answer), until
    /// one is answered: NATS unreachable from here, or without a quorum.
    pub unanswered_since: Option<u64>,
}

impl Lease {
    /// A standby that knows of epochs up to `epoch` (the last `LeaderChanged` in its log).
    pub fn new(instance: &str, config: LeaseConfig, epoch: u64) -> Lease {
        Lease {
            instance: instance.to_string(),
            config,
            role: Role::Standby {
                epoch,
                leader: None,
                retry_at: 0,
            },
            pending: None,
            led: None,
            unanswered_since: None,
        }
    }

    /// Whether the instance may issue a node command or an API change at `now`: it leads,
    /// its campaign delay is over, and its last renewal is recent enough that nobody else
    /// can hold the lease yet.
    pub fn may_act(&self, now: u64) -> bool {
        self.window()
            .is_some_and(|(from, until)| from <= now && now < until)
    }

    /// While it leads: from when it may act (the campaign delay over) until when (its
    /// fence, unless a renewal moves it).
    pub fn window(&self) -> Option<(u64, u64)> {
        match self.role {
            Role::Leader {
                renewed, acts_at, ..
            } => Some((acts_at, self.fence_at(renewed))),
            Role::Standby { .. } | Role::Stopped => None,
        }
    }

    /// The leader's epoch, while it leads (acting or not yet).
    pub fn epoch(&self) -> Option<u64> {
        match self.role {
            Role::Leader { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    fn fence_at(&self, renewed: u64) -> u64 {
        renewed.saturating_add(self.config.ttl_ms.saturating_sub(self.config.margin_ms))
    }

    /// Time passes: a leader whose last renewal is `ttl − margin` old stops acting and
    /// stands by (fenced; it asks for the lease again like any standby).
    pub fn tick(&mut self, now: u64) -> Option<Change> {
        if let Role::Leader { epoch, renewed, .. } = self.role
            && now >= self.fence_at(renewed)
        {
            self.role = Role::Standby {
                epoch,
                leader: None,
                retry_at: now,
            };
            return Some(Change::SteppedDown {
                epoch,
                cause: Cause::Fenced,
                why: format!(
                    "fenced: no renewal of the lease was answered for {} ms (NATS unreachable \
                     from here, or without a quorum of its servers), and it could be another's \
                     in {} ms",
                    now.saturating_sub(renewed),
                    self.config.margin_ms
                ),
            });
        }
        None
    }

    /// The call to make at `now` (none while one is on its way), and when to ask again.
    pub fn next(&mut self, now: u64) -> (Option<Call>, Option<u64>) {
        if self.pending.is_some() {
            return (None, None);
        }
        let call = match &self.role {
            Role::Standby {
                epoch, retry_at, ..
            } => {
                if now < *retry_at {
                    return (None, Some(*retry_at));
                }
                Call::Create(Holder {
                    instance: self.instance.clone(),
                    epoch: epoch + 1,
                })
            }
            Role::Leader {
                epoch,
                revision,
                renewed,
                ..
            } => {
                let due = renewed.saturating_add(self.config.renew_every_ms());
                if now < due {
                    return (None, Some(due));
                }
                Call::Update {
                    holder: Holder {
                        instance: self.instance.clone(),
                        epoch: *epoch,
                    },
                    revision: *revision,
                }
            }
            Role::Stopped => return (None, None),
        };
        self.pending = Some(call.clone());
        (Some(call), None)
    }

    /// What the pending call answered, at `now`.
    pub fn answered(&mut self, answer: Answer, now: u64) -> Option<Change> {
        let call = self.pending.take()?;
        let retry_at = now.saturating_add(self.config.renew_every_ms());
        if answer == Answer::NoAnswer {
            self.unanswered_since.get_or_insert(now);
        } else {
            self.unanswered_since = None;
        }
        match (call, answer) {
            (Call::Create(h), Answer::Stored { revision, sent }) => {
                self.led = Some(h.epoch);
                self.role = Role::Leader {
                    epoch: h.epoch,
                    revision,
                    renewed: sent,
                    acts_at: sent.saturating_add(self.config.campaign_delay_ms),
                };
                Some(Change::Elected { epoch: h.epoch })
            }
            (Call::Create(h), Answer::Held(leader)) => {
                let known = match &self.role {
                    Role::Standby { epoch, .. } => *epoch,
                    _ => h.epoch.saturating_sub(1),
                };
                let deposed = match (self.led, &leader) {
                    (Some(led), Some(l)) if l.epoch > led => Some(Change::SteppedDown {
                        epoch: led,
                        cause: Cause::Deposed,
                        why: format!("deposed: the lease is {l}'s now"),
                    }),
                    _ => None,
                };
                if deposed.is_some() {
                    self.led = None;
                }
                self.role = Role::Standby {
                    epoch: leader.as_ref().map_or(known, |l| l.epoch.max(known)),
                    leader,
                    retry_at,
                };
                deposed
            }
            (Call::Create(_), Answer::NoAnswer) => {
                if let Role::Standby { retry_at: r, .. } = &mut self.role {
                    *r = retry_at;
                }
                None
            }
            (Call::Update { .. }, Answer::Stored { revision, sent }) => {
                if let Role::Leader {
                    revision: rev,
                    renewed,
                    ..
                } = &mut self.role
                {
                    *rev = revision;
                    *renewed = sent;
                }
                None
            }
            (Call::Update { holder, .. }, Answer::Held(leader)) => {
                let epoch = leader
                    .as_ref()
                    .map_or(holder.epoch, |l| l.epoch.max(holder.epoch));
                let why = match &leader {
                    Some(l) => format!("deposed: the lease is {l}'s now"),
                    None => "deposed: the lease has another revision".to_string(),
                };
                let was = matches!(self.role, Role::Leader { .. });
                self.led = None;
                self.role = Role::Standby {
                    epoch,
                    leader,
                    retry_at,
                };
                was.then_some(Change::SteppedDown {
                    epoch: holder.epoch,
                    cause: Cause::Deposed,
                    why,
                })
            }
            // A renewal that did not answer: tried again at once; `tick` fences in time.
            (Call::Update { .. }, Answer::NoAnswer) => None,
            (Call::Release { .. }, _) => None,
        }
    }

    /// The log holds epochs up to `epoch` (a standby's follower copy grows, or a leader
    /// caught up with the replicated log before acting). A standby asks for the next epoch
    /// from then on. A leader whose own epoch is not above it must not act: its records
    /// would be a deposed leader's, ignored by the fold. It stands down and asks again once
    /// the key has expired (it does not release a key another's records outrank).
    pub fn saw_epoch(&mut self, epoch: u64, now: u64) -> Option<Change> {
        match &mut self.role {
            Role::Standby { epoch: known, .. } => {
                *known = (*known).max(epoch);
                None
            }
            Role::Leader { epoch: own, .. } if *own <= epoch => {
                let own = *own;
                self.role = Role::Standby {
                    epoch,
                    leader: None,
                    retry_at: now,
                };
                Some(Change::SteppedDown {
                    epoch: own,
                    cause: Cause::Outranked,
                    why: format!(
                        "the log already holds epoch {epoch}, not below this lease's {own}: \
                         asking again for epoch {}",
                        epoch + 1
                    ),
                })
            }
            Role::Leader { .. } | Role::Stopped => None,
        }
    }

    /// A clean stop: the lease is released if held (the call to make), and nothing is
    /// asked again.
    pub fn stop(&mut self) -> Option<Call> {
        let call = match self.role {
            Role::Leader { revision, .. } => Some(Call::Release { revision }),
            _ => None,
        };
        self.role = Role::Stopped;
        self.pending = call.clone();
        call
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: LeaseConfig = LeaseConfig {
        ttl_ms: 15_000,
        campaign_delay_ms: 5_000,
        margin_ms: 3_000,
    };

    fn holder(i: &str, epoch: u64) -> Holder {
        Holder {
            instance: i.into(),
            epoch,
        }
    }

    /// A leader of epoch 1 at revision 7, elected by a create sent at `t`.
    fn leader_at(t: u64) -> Lease {
        let mut l = Lease::new("a", C, 0);
        assert_eq!(l.next(t).0, Some(Call::Create(holder("a", 1))));
        let change = l.answered(
            Answer::Stored {
                revision: 7,
                sent: t,
            },
            t + 10,
        );
        assert_eq!(change, Some(Change::Elected { epoch: 1 }));
        l
    }

    #[test]
    fn unanswered_calls_are_dated_from_the_first_until_one_is_answered() {
        let mut s = Lease::new("b", C, 0);
        assert_eq!(s.unanswered_since, None);
        assert!(s.next(0).0.is_some());
        assert_eq!(s.answered(Answer::NoAnswer, 1_000), None);
        assert_eq!(s.unanswered_since, Some(1_000));
        // Asked again later, still nothing: the first silence is kept.
        let (call, _) = s.next(6_000);
        assert!(call.is_some());
        assert_eq!(s.answered(Answer::NoAnswer, 7_000), None);
        assert_eq!(s.unanswered_since, Some(1_000));
        // A refusal is an answer: the store is reachable.
        assert!(s.next(12_000).0.is_some());
        s.answered(Answer::Held(Some(holder("a", 1))), 12_100);
        assert_eq!(s.unanswered_since, None);
        // A leader's renewal that goes unanswered dates the silence too; a stored one ends it.
        let mut l = leader_at(0);
        let (call, _) = l.next(C.renew_every_ms());
        assert!(matches!(call, Some(Call::Update { .. })));
        l.answered(Answer::NoAnswer, C.renew_every_ms() + 500);
        assert_eq!(l.unanswered_since, Some(C.renew_every_ms() + 500));
        let (call, _) = l.next(C.renew_every_ms() + 600);
        assert!(matches!(call, Some(Call::Update { .. })));
        l.answered(
            Answer::Stored {
                revision: 8,
                sent: C.renew_every_ms() + 600,
            },
            C.renew_every_ms() + 700,
        );
        assert_eq!(l.unanswered_since, None);
    }

    #[test]
    fn an_epoch_seen_in_the_log_raises_the_next_ask_and_stands_a_stale_leader_down() {
        let mut s = Lease::new("b", C, 1);
        assert_eq!(s.saw_epoch(4, 0), None);
        assert_eq!(s.next(0).0, Some(Call::Create(holder("b", 5))));
        // A lower epoch seen later changes nothing.
        let mut s = Lease::new("b", C, 4);
        assert_eq!(s.saw_epoch(2, 0), None);
        assert_eq!(s.next(0).0, Some(Call::Create(holder("b", 5))));
        // A leader of epoch 1 whose log holds epoch 1 already (another's) stands down.
        let mut l = leader_at(0);
        assert_eq!(l.saw_epoch(0, 100), None);
        assert!(l.may_act(C.campaign_delay_ms));
        let change = l.saw_epoch(1, 200);
        assert!(
            matches!(&change, Some(Change::SteppedDown { epoch: 1, cause: Cause::Outranked, why }) if why.contains("epoch 2")),
            "{change:?}"
        );
        assert!(!l.may_act(C.campaign_delay_ms));
        assert_eq!(l.next(200).0, Some(Call::Create(holder("a", 2))));
    }

    #[test]
    fn a_fenced_leader_that_finds_anothers_lease_says_it_was_deposed_once() {
        let mut l = leader_at(0);
        let fenced = l.tick(C.ttl_ms);
        assert!(
            matches!(&fenced, Some(Change::SteppedDown { epoch: 1, cause: Cause::Fenced, why }) if why.starts_with("fenced")),
            "{fenced:?}"
        );
        // Its own old key (no holder readable, or its own epoch) is no news.
        assert_eq!(l.next(C.ttl_ms).0, Some(Call::Create(holder("a", 2))));
        assert_eq!(
            l.answered(Answer::Held(Some(holder("a", 1))), C.ttl_ms),
            None
        );
        let later = C.ttl_ms + C.renew_every_ms();
        assert_eq!(l.next(later).0, Some(Call::Create(holder("a", 2))));
        let deposed = l.answered(Answer::Held(Some(holder("b", 2))), later);
        assert_eq!(
            deposed,
            Some(Change::SteppedDown {
                epoch: 1,
                cause: Cause::Deposed,
                why: "deposed: the lease is b (epoch 2)'s now".into()
            })
        );
        let again = later + C.renew_every_ms();
        assert_eq!(l.next(again).0, Some(Call::Create(holder("a", 3))));
        assert_eq!(l.answered(Answer::Held(Some(holder("b", 2))), again), None);
        // A standby that never led is never "deposed".
        let mut s = Lease::new("c", C, 0);
        s.next(0);
        assert_eq!(s.answered(Answer::Held(Some(holder("b", 2))), 0), None);
    }

    #[test]
    fn the_gate_leaves_out_a_deposed_leaders_records_run_by_run() {
        let (a, b) = (RunId::new(), RunId::new());
        let rec = |run, epoch, event| Record {
            run,
            seq: 0,
            at: crate::Timestamp(0),
            epoch,
            event,
        };
        let lead = |i: &str, epoch| Event::LeaderChanged {
            instance: i.into(),
            epoch,
        };
        let other = || Event::RunRecovered { pid: 1 };
        let mut g = EpochGate::default();
        let rows = [
            (rec(a, 0, other()), true),
            (rec(a, 1, lead("x", 1)), true),
            (rec(a, 1, other()), true),
            (rec(a, 2, lead("y", 2)), true),
            // The deposed leader of epoch 1, late.
            (rec(a, 1, other()), false),
            // A LeaderChanged whose record is of another epoch, or not above the run's,
            // is left out and raises nothing.
            (rec(a, 3, lead("z", 4)), false),
            (rec(a, 2, lead("z", 2)), false),
            (rec(a, 2, other()), true),
            // Another run has its own epochs.
            (rec(b, 0, other()), true),
        ];
        for (i, (r, want)) in rows.iter().enumerate() {
            assert_eq!(g.admits(r), *want, "row {i}");
        }
    }

    #[test]
    fn a_records_standing_against_its_runs_epoch_row_by_row() {
        let rec = |epoch, event| Record {
            run: RunId::new(),
            seq: 0,
            at: crate::Timestamp(0),
            epoch,
            event,
        };
        let lead = |epoch| Event::LeaderChanged {
            instance: "x".into(),
            epoch,
        };
        let other = || Event::RunRecovered { pid: 1 };
        let rows = [
            // (the run's epoch, the record, its standing)
            (0, rec(0, other()), Standing::Counts),
            (2, rec(2, other()), Standing::Counts),
            (2, rec(3, other()), Standing::Counts),
            (2, rec(1, other()), Standing::Deposed),
            (2, rec(1, lead(3)), Standing::Deposed),
            (0, rec(1, lead(1)), Standing::Takeover(1)),
            (2, rec(5, lead(5)), Standing::Takeover(5)),
            (2, rec(2, lead(2)), Standing::FalseTakeover),
            (2, rec(3, lead(4)), Standing::FalseTakeover),
            (2, rec(4, lead(3)), Standing::FalseTakeover),
        ];
        for (i, (run_epoch, r, want)) in rows.iter().enumerate() {
            assert_eq!(standing(*run_epoch, r), *want, "row {i}");
        }
    }

    #[test]
    fn an_instance_name_is_a_short_plain_word() {
        for ok in ["admin-1", "a", "host.example_2", &"x".repeat(63)] {
            assert_eq!(check_instance(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a b",
            "a\ninstance=b",
            "a;rm",
            "é",
            &"x".repeat(64),
        ] {
            assert!(check_instance(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_acting_leader_takes_writes_and_a_refusal_names_the_leader() {
        let rows = [
            (true, None, None),
            (
                false,
                Some(holder("a", 3)),
                Some("the leader is a (epoch 3)"),
            ),
            (false, Some(holder("b", 3)), Some("may not act yet")),
            (false, None, Some("no leader holds the lease")),
        ];
        for (acting, leader, want) in rows {
            let got = write_refusal("b", acting, leader.as_ref());
            match want {
                None => assert_eq!(got, None),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?}"),
            }
        }
    }

    #[test]
    fn a_configuration_that_cannot_fence_in_time_is_refused() {
        assert_eq!(C.validate(), Ok(()));
        assert_eq!(LeaseConfig::DEFAULT.validate(), Ok(()));
        let rows = [
            (1_000, 100, Err(LeaseConfigError::TtlTooShort(1_000))),
            (
                15_000,
                0,
                Err(LeaseConfigError::Margin {
                    margin: 0,
                    ttl: 15_000,
                }),
            ),
            (
                15_000,
                5_001,
                Err(LeaseConfigError::Margin {
                    margin: 5_001,
                    ttl: 15_000,
                }),
            ),
            (15_000, 5_000, Ok(())),
        ];
        for (ttl, margin, want) in rows {
            let c = LeaseConfig {
                ttl_ms: ttl,
                campaign_delay_ms: 0,
                margin_ms: margin,
            };
            assert_eq!(c.validate(), want, "{ttl} {margin}");
        }
    }

    #[test]
    fn the_value_reads_back_and_anything_else_is_nobody() {
        let h = holder("admin-2", 41);
        assert_eq!(h.encode(), "epoch=41 instance=admin-2");
        assert_eq!(Holder::decode(&h.encode()), Some(h));
        for bad in [
            "",
            "epoch=x instance=a",
            "epoch=1 instance=",
            "instance=a epoch=1",
        ] {
            assert_eq!(Holder::decode(bad), None, "{bad:?}");
        }
    }

    /// Acquire: a standby creates the key with the next epoch; elected, it acts only after
    /// the campaign delay.
    #[test]
    fn an_elected_leader_acts_only_after_its_campaign_delay() {
        let l = leader_at(1_000);
        assert!(!l.may_act(1_000));
        assert!(!l.may_act(5_999));
        assert!(l.may_act(6_000));
        assert_eq!(l.epoch(), Some(1));
    }

    /// Acquire refused: the holder's epoch is learnt, and the next try is a third of the TTL
    /// later, with the epoch after it.
    #[test]
    fn a_standby_refused_waits_and_asks_with_the_epoch_after_the_holders() {
        let mut l = Lease::new("b", C, 3);
        assert_eq!(l.next(0).0, Some(Call::Create(holder("b", 4))));
        assert_eq!(l.next(1).0, None, "one call at a time");
        assert_eq!(l.answered(Answer::Held(Some(holder("a", 9))), 100), None);
        assert!(!l.may_act(100));
        assert_eq!(l.next(200), (None, Some(5_100)));
        assert_eq!(l.next(5_100).0, Some(Call::Create(holder("b", 10))));
        // No answer: asked again a third of the TTL later.
        assert_eq!(l.answered(Answer::NoAnswer, 6_000), None);
        assert_eq!(l.next(6_000), (None, Some(11_000)));
    }

    /// Renew: at most every third of the TTL, at the revision held; a stored renewal counts
    /// from when it was sent.
    #[test]
    fn a_leader_renews_every_third_of_the_ttl_at_its_revision() {
        let mut l = leader_at(0);
        assert_eq!(l.next(4_999), (None, Some(5_000)));
        assert_eq!(
            l.next(5_000).0,
            Some(Call::Update {
                holder: holder("a", 1),
                revision: 7
            })
        );
        l.answered(
            Answer::Stored {
                revision: 8,
                sent: 5_000,
            },
            5_400,
        );
        assert_eq!(l.next(5_400), (None, Some(10_000)));
        assert!(l.may_act(16_999));
        assert!(!l.may_act(17_000), "fenced at sent + ttl - margin");
    }

    /// Fence: renewals that do not answer; the leader acts until `ttl − margin` after the
    /// last one that did, then stands by and asks for the lease like any standby.
    #[test]
    fn a_leader_whose_renewals_fail_fences_itself_before_the_lease_can_pass() {
        let mut l = leader_at(0);
        let mut t = 5_000;
        while t < 12_000 {
            if let (Some(Call::Update { .. }), _) = l.next(t) {
                l.answered(Answer::NoAnswer, t + 1_000);
            }
            assert_eq!(l.tick(t), None, "{t}");
            assert!(l.may_act(t), "{t}");
            t += 500;
        }
        let change = l.tick(12_000);
        assert!(
            matches!(&change, Some(Change::SteppedDown { epoch: 1, cause: Cause::Fenced, why }) if why.contains("fenced")),
            "{change:?}"
        );
        assert!(!l.may_act(12_000));
        assert_eq!(l.next(12_000).0, Some(Call::Create(holder("a", 2))));
    }

    /// Stand down: a renewal that finds another revision means another instance holds the
    /// lease: deposed at once, whatever the time.
    #[test]
    fn a_leader_whose_renewal_finds_another_holder_stands_down_at_once() {
        let mut l = leader_at(0);
        assert!(matches!(l.next(5_000).0, Some(Call::Update { .. })));
        let change = l.answered(Answer::Held(Some(holder("b", 2))), 5_100);
        assert!(
            matches!(&change, Some(Change::SteppedDown { epoch: 1, cause: Cause::Deposed, why }) if why.contains("b (epoch 2)")),
            "{change:?}"
        );
        assert!(!l.may_act(5_100));
        assert_eq!(l.next(5_100), (None, Some(10_100)));
        assert_eq!(l.next(10_100).0, Some(Call::Create(holder("a", 3))));
    }

    /// A leader stopped (SIGSTOP) past its TTL and continued: its clock says the renewal is
    /// old, so it acts no more before asking anything.
    #[test]
    fn a_leader_continued_after_a_long_stop_acts_no_more() {
        let mut l = leader_at(0);
        assert!(l.may_act(6_000));
        assert!(!l.may_act(60_000));
        assert!(matches!(l.tick(60_000), Some(Change::SteppedDown { .. })));
    }

    #[test]
    fn a_clean_stop_releases_a_held_lease_and_asks_nothing_more() {
        let mut l = leader_at(0);
        assert_eq!(l.stop(), Some(Call::Release { revision: 7 }));
        assert!(!l.may_act(6_000));
        assert_eq!(l.answered(Answer::NoAnswer, 6_000), None);
        assert_eq!(l.next(6_000), (None, None));
        let mut s = Lease::new("b", C, 0);
        assert_eq!(s.stop(), None);
    }

    /// The safety the margin and the campaign delay buy, over many timings: an old leader's
    /// last instant of acting comes before the new leader's first. The key lives until the
    /// server stored the last renewal (at or after it was sent) plus the TTL; the new leader
    /// can create it only then.
    #[test]
    fn an_old_leader_never_acts_when_a_new_one_may() {
        for sent in (0..20_000).step_by(777) {
            for stored_after in [0, 1, 250, 2_000] {
                let mut old = leader_at(0);
                if sent >= 5_000 {
                    let _ = old.next(sent);
                    old.answered(Answer::Stored { revision: 8, sent }, sent + stored_after);
                }
                let renewed = if sent >= 5_000 { sent } else { 0 };
                let expires = renewed + stored_after + C.ttl_ms;
                let mut new = Lease::new("b", C, 1);
                let _ = new.next(expires);
                new.answered(
                    Answer::Stored {
                        revision: 9,
                        sent: expires,
                    },
                    expires,
                );
                let first = (expires..expires + 60_000)
                    .find(|t| new.may_act(*t))
                    .expect("the new leader acts");
                let last = (0..first + 1).rev().find(|t| old.may_act(*t));
                assert!(
                    last.is_some_and(|l| l + C.margin_ms + C.campaign_delay_ms <= first),
                    "sent {sent}, stored +{stored_after}: old acts until {last:?}, new from {first}"
                );
            }
        }
    }
}
