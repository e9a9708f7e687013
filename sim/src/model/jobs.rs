//! Jobs: pods run to completion, as the Job controller runs them. Up to `parallelism` pods at
//! once until `completions` succeeded (`Complete`, after `SuccessCriteriaMet`), or more than
//! `backoffLimit` failed (`Failed`, `BackoffLimitExceeded`), or `activeDeadlineSeconds` passed
//! (`DeadlineExceeded`). A finished Job is deleted `ttlSecondsAfterFinished` later. How long
//! each pod runs and how it exits is its template's (`model::template`).

use super::*;

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEnd {
    Complete,
    Failed { reason: String, message: String },
}

/// What the Job controller writes in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobStatus {
    pub active: u32,
    pub ready: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub terminating: u32,
    pub started: Option<Millis>,
    /// When the success criteria were met (`Complete` follows at once).
    pub completed: Option<Millis>,
    pub ended: Option<(JobEnd, Millis)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimJob {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Millis,
    pub resource_version: u64,
    pub generation: u64,
    pub labels: Labels,
    pub annotations: Labels,
    /// The spec as the API was given it, with the apiserver's defaults (the selector and the
    /// template's labels it adds).
    pub spec: Given<serde_json::Value>,
    pub template: PodTemplate,
    pub parallelism: u32,
    pub completions: Option<u32>,
    pub backoff_limit: u32,
    pub active_deadline_ms: Option<Millis>,
    pub ttl_after_finished_ms: Option<Millis>,
    pub suspend: bool,
    pub status: JobStatus,
}

impl World {
    /// Stores a new Job (the API layer named, defaulted and validated it); returns its key.
    pub(crate) fn add_job(&mut self, mut job: SimJob) -> (String, String) {
        job.uid = if job.uid.is_empty() {
            self.uid()
        } else {
            job.uid
        };
        job.created = self.now;
        job.resource_version = self.bump();
        job.generation = 1;
        let key = (job.namespace.clone(), job.name.clone());
        self.jobs.insert(key.clone(), job);
        self.noted(Res::Job, &key.0, &key.1, true);
        self.tick();
        key
    }

    /// Every Job one step further.
    pub(super) fn reconcile_jobs(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let now = self.now;
        let keys: Vec<(String, String)> = self.jobs.keys().cloned().collect();
        for key in keys {
            let Some(job) = self.jobs.get(&key) else {
                continue;
            };
            // A finished Job waits for its time to live (read in place: a cluster keeps
            // many, and every pass would copy each).
            if let Some((_, at)) = &job.status.ended {
                if job.ttl_after_finished_ms.is_some_and(|ttl| at + ttl <= now) {
                    self.delete_job(&key, gc::Propagation::Background);
                }
                continue;
            }
            let job = job.clone();
            let pods: Vec<&SimPod> = self.owned_by(&job.uid).collect();
            let mut s = JobStatus {
                started: job.status.started,
                ..JobStatus::default()
            };
            for p in &pods {
                match p.phase {
                    PodPhase::Succeeded => s.succeeded += 1,
                    PodPhase::Failed => s.failed += 1,
                    _ if p.deleting_at.is_some() => s.terminating += 1,
                    _ => {
                        s.active += 1;
                        if p.is_ready(now, &self.nodes) {
                            s.ready += 1;
                        }
                    }
                }
            }
            // A container restarted after failing (OnFailure) counts against the limit too.
            s.failed += pods
                .iter()
                .filter(|p| p.spec.restart == Restart::OnFailure)
                .map(|p| p.restarts)
                .sum::<u32>();
            let active_keys: Vec<(String, String)> = pods
                .iter()
                .filter(|p| !p.is_finished() && p.deleting_at.is_none())
                .map(|p| p.key())
                .collect();
            let about = About {
                kind: "Job",
                api_version: "batch/v1",
                namespace: job.namespace.clone(),
                name: job.name.clone(),
                uid: job.uid.clone(),
                field_path: None,
            };
            let source = record::controller("job-controller");
            if !job.suspend && s.started.is_none() {
                s.started = Some(now);
            }
            let want_done = job.completions.unwrap_or(1);
            let end = if s.succeeded >= want_done && (job.completions.is_some() || s.active == 0) {
                s.completed = Some(now);
                Some(JobEnd::Complete)
            } else if s.failed > job.backoff_limit {
                Some(JobEnd::Failed {
                    reason: "BackoffLimitExceeded".into(),
                    message: "Job has reached the specified backoff limit".into(),
                })
            } else if let (Some(deadline), Some(start)) = (job.active_deadline_ms, s.started)
                && start + deadline <= now
            {
                Some(JobEnd::Failed {
                    reason: "DeadlineExceeded".into(),
                    message: "Job was active longer than specified deadline".into(),
                })
            } else {
                None
            };
            match &end {
                Some(e) => {
                    for k in &active_keys {
                        self.start_termination(k, None);
                    }
                    s.active = 0;
                    s.ready = 0;
                    match e {
                        JobEnd::Complete => {
                            self.event(about, source, "Completed", "Job completed".into())
                        }
                        JobEnd::Failed { reason, message } => {
                            self.warning(about, source, reason, message.clone())
                        }
                    }
                    s.ended = Some((e.clone(), now));
                }
                None if !job.suspend => {
                    let remaining = want_done.saturating_sub(s.succeeded);
                    let want_active = job
                        .parallelism
                        .min(remaining.max(u32::from(job.completions.is_none())));
                    for _ in s.active..want_active {
                        let name = format!("{}-{}", job.name, self.suffix(5));
                        let owner = OwnerRef {
                            kind: "Job".into(),
                            name: job.name.clone(),
                            uid: job.uid.clone(),
                        };
                        self.create_pod(
                            &job.namespace,
                            &name,
                            Some(owner),
                            job.template.clone(),
                            Labels::new(),
                            None,
                        );
                        self.event(
                            about.clone(),
                            source,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                        s.active += 1;
                    }
                }
                None => {
                    for k in &active_keys {
                        self.start_termination(k, None);
                    }
                    s.active = 0;
                    s.ready = 0;
                }
            }
            if s != job.status {
                let rv = self.bump();
                if let Some(j) = self.jobs.get_mut(&key) {
                    j.status = s;
                    j.resource_version = rv;
                }
                self.noted(Res::Job, &key.0, &key.1, false);
            }
        }
    }

    /// When the next Job's deadline or time-to-live ends.
    pub(super) fn next_job_change(&self) -> Option<Millis> {
        let now = self.now;
        self.jobs
            .values()
            .filter_map(|j| match (&j.status.ended, j.status.started) {
                (Some((_, at)), _) => j.ttl_after_finished_ms.map(|t| at + t),
                (None, Some(start)) => j.active_deadline_ms.map(|d| start + d),
                _ => None,
            })
            .filter(|&t| t > now)
            .min()
    }
}
