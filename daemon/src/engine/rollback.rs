//! `upgradectl rollback`: the engine records a rollback run, linked to the run it undoes,
//! and drives it like any run. What it contains is the core's (`planner::rollback`); this
//! only reads the log, observes the cluster for the health baseline, and records.

use std::sync::Arc;

use upgraded_events::request::{self, FollowUp};
use upgraded_events::{Actor, Record, RunId, RunState};
use upgraded_planner::rollback::{self, RollbackError, RollbackPlan, RollbackRequest};

use super::{Daemon, RequestError};
use crate::log::EventLog;

impl<L: EventLog + Clone> Daemon<L> {
    /// Plans the rollback `req` asks for of `of` (default: the newest run); unless
    /// `plan_only`, records it as a new run and starts it.
    pub async fn rollback(
        self: &Arc<Self>,
        mut req: RollbackRequest,
        of: Option<RunId>,
        by: Actor,
        plan_only: bool,
    ) -> Result<(Option<RunId>, RollbackPlan), RequestError> {
        request::may_plan(self.active_phase(), plan_only)?;
        let undone = match of {
            Some(run) => run,
            None => self
                .log
                .runs()?
                .last()
                .copied()
                .ok_or(RequestError::Rollback(RollbackError::NoRun))?,
        };
        let records = self.log.read(undone, 0)?;
        if records.is_empty() {
            return Err(RequestError::Rollback(RollbackError::UnknownRun(undone)));
        }
        let rollbacks = self.rollbacks_of(undone)?;
        req.now = Some(self.clock.now());
        let planned = rollback::plan(&records, &rollbacks, &req).map_err(RequestError::Rollback)?;
        if plan_only {
            return Ok((None, planned));
        }
        // The health the gates compare against: the cluster as the rollback finds it.
        let observed = self
            .ports
            .cluster
            .observe()
            .await
            .map_err(|e| RequestError::Inventory(e.to_string()))?;
        let forward = RunState::replay(&records);
        let target = planned
            .plan
            .target
            .or(forward.target)
            .unwrap_or(observed.apiserver);
        let run = self
            .record_and_drive(
                observed,
                target,
                planned.plan.clone(),
                forward.policy,
                None,
                by,
            )
            .await?;
        tracing::info!(%run, undoes = %undone, "rollback started");
        Ok((Some(run), planned))
    }

    /// The records of the rollbacks already made of `undone` (what they set back counts),
    /// oldest first.
    fn rollbacks_of(&self, undone: RunId) -> Result<Vec<Vec<Record>>, RequestError> {
        let mut rollbacks = Vec::new();
        for other in self.log.runs()? {
            if other == undone {
                continue;
            }
            let r = self.log.read(other, 0)?;
            if RunState::replay(&r).plan.undoes == Some(undone) {
                rollbacks.push(r);
            }
        }
        Ok(rollbacks)
    }

    /// Once `run` has ended: what the core says it still owes (`request::follow_up`), done.
    pub(super) async fn after_run(self: &Arc<Self>, run: RunId) {
        // Almost every run owes nothing: only then are the other runs read.
        let Ok(records) = self.log.read(run, 0) else {
            return;
        };
        let state = RunState::replay(&records);
        if request::follow_up(&state, false).is_none() {
            return;
        }
        let Ok(rollbacks) = self.rollbacks_of(run) else {
            return;
        };
        let Some(FollowUp::RollbackWholeRun { reason }) =
            request::follow_up(&state, !rollbacks.is_empty())
        else {
            return;
        };
        tracing::warn!(%run, %reason, "rolling the whole run back (policy rollback-run)");
        let planned = match rollback::whole_run(&records, &rollbacks) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%run, error = %e, "cannot roll the run back: do it by hand (see the runbook)");
                return;
            }
        };
        let observed = match self.ports.cluster.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%run, error = %e, "cannot read the cluster to roll the run back; the next start tries again");
                return;
            }
        };
        let target = planned.plan.target.unwrap_or(observed.apiserver);
        match self
            .record_and_drive(
                observed,
                target,
                planned.plan,
                state.policy,
                None,
                Actor::daemon(),
            )
            .await
        {
            Ok(rollback) => tracing::info!(%run, %rollback, "whole-run rollback started"),
            Err(e) => tracing::error!(%run, error = %e, "cannot record the rollback run"),
        }
    }
}
