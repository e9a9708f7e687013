//! How each workflow step is carried out through the ports, and how an in-doubt step is probed.

use std::sync::Arc;
use std::time::Duration;

use upgraded_events::check::probe::ProbeOrders;
use upgraded_events::check::run::RunCheck;
use upgraded_events::check::{
    self, Boundary, Check, CheckKind, Disruption, ProbeEnd, Severity, StepVerdict, Verdict,
};
use upgraded_events::fault::FailureKind;
use upgraded_events::gate;
use upgraded_events::inventory::CRI_SOCKET_KEY;
use upgraded_events::state::{Baseline, NodeChecks, ScaledWorkload};
use upgraded_events::{Entry, Event, Facts, Host, Policy, RunId, Step, Version};

use crate::drain::{self, DrainRules};
use crate::ports::{
    Clock, ClusterApi, HostProbes, NodeExecutor, PortError, ProbePod, Recorder, RemoteCommand,
};

/// The adapters a step may use.
#[derive(Clone)]
pub struct Adapters {
    pub cluster: Arc<dyn ClusterApi>,
    pub nodes: Arc<dyn NodeExecutor>,
    /// HTTP and commands from the daemon's host (Prometheus, ingress, operators' checks).
    pub host: Arc<dyn HostProbes>,
    /// Upper bound for one remote command.
    pub command_timeout: Duration,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters")
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// Everything one step of one plan entry needs.
pub struct StepEnv<'a> {
    pub ports: &'a Adapters,
    pub clock: &'a dyn Clock,
    pub notes: &'a dyn Recorder,
    pub policy: &'a Policy,
    pub baseline: Option<Baseline>,
    /// The plan entry (what events name) and the Kubernetes node it works on.
    pub entry: &'a Entry,
    pub host: &'a Host,
    /// The entry's whole step list (the versions it should end at).
    pub steps: &'a [Step],
    pub target: Option<Version>,
    /// Workloads this entry's drains scaled up and nobody restored yet (from the log).
    pub scaled: Vec<ScaledWorkload>,
    /// The run, and the attempt of the step under way (probe objects are named after both).
    pub run: RunId,
    pub attempt: u32,
    /// For a checks step: what the core chose to run on this node.
    pub checks: Option<NodeChecks>,
}

impl std::fmt::Debug for StepEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepEnv")
            .field("entry", &self.entry)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// How often a gate looks again while it waits.
const GATE_POLL: Duration = Duration::from_secs(5);

impl StepEnv<'_> {
    async fn remote(&self, cmd: &RemoteCommand) -> Result<Facts, PortError> {
        Ok(self
            .ports
            .nodes
            .run(self.host, cmd, self.ports.command_timeout)
            .await?
            .facts)
    }

    /// Node Ready at its versions, its own control-plane pods Ready (waiting up to the
    /// policy's timeout), then the cluster's CrashLoopBackOff share against the baseline.
    /// The control plane as a whole (each apiserver, etcd's quorum) is the checks step's.
    async fn verify(&self, facts: &mut Facts) -> Result<(), PortError> {
        let cluster = &self.ports.cluster;
        let deadline = self
            .clock
            .now()
            .plus_secs(self.policy.node_ready_timeout_secs);
        loop {
            let status = cluster.node_status(self.host).await?;
            match gate::node_unmet(self.host, self.steps, &status) {
                None => {
                    facts.insert("kubelet_version".into(), status.kubelet_version.to_string());
                    if let Some(cp) = &status.control_plane {
                        facts.insert("apiserver_version".into(), cp.apiserver.to_string());
                    }
                    break;
                }
                Some(why) if self.clock.now() >= deadline => {
                    let mut e = PortError::retryable(format!(
                        "{why} {}s after its restart",
                        self.policy.node_ready_timeout_secs
                    ));
                    e.facts.extend(std::mem::take(facts));
                    // The verdict's inputs, recorded with it.
                    e.facts.insert("ready".into(), status.ready.to_string());
                    e.facts
                        .insert("kubelet_version".into(), status.kubelet_version.to_string());
                    e.facts.insert(
                        "control_plane_ready".into(),
                        status.control_plane_ready.to_string(),
                    );
                    e.facts
                        .entry("gate".into())
                        .or_insert_with(|| "node".into());
                    return Err(e);
                }
                Some(_) => {
                    let at = self.clock.now().plus_millis(GATE_POLL.as_millis() as u64);
                    self.clock.sleep_until(at.min(deadline)).await;
                }
            }
        }
        self.health_gate(facts).await
    }

    /// The cluster's CrashLoopBackOff share against the pre-upgrade baseline.
    async fn health_gate(&self, facts: &mut Facts) -> Result<(), PortError> {
        let cluster = &self.ports.cluster;
        if let Some(before) = self.baseline {
            let now = Baseline::of_health(cluster.pod_health().await?);
            // The verdict's inputs, recorded whichever way it goes.
            facts.insert("crash_loop_bp".into(), now.crash_loop_bp().to_string());
            facts.insert(
                "crash_loop_baseline_bp".into(),
                before.crash_loop_bp().to_string(),
            );
            facts.insert(
                "crash_loop_max_increase_points".into(),
                self.policy.crash_loop_increase_percent.to_string(),
            );
            gate::crash_loop(&before, &now, self.policy.crash_loop_increase_percent).map_err(
                |why| {
                    let mut e = PortError::retryable(why).with_fact("gate", "crash-loop");
                    e.facts.extend(facts.clone());
                    e
                },
            )?;
        }
        Ok(())
    }
}

/// How often a probe is looked at while it runs.
const PROBE_POLL: Duration = Duration::from_secs(2);

impl StepEnv<'_> {
    /// The node's checks while it is still cordoned: each check recorded before its probes
    /// are created and after its verdict; the step's verdict is the core's
    /// (`check::step_verdict`).
    async fn checks(&self, facts: &mut Facts) -> Result<(), PortError> {
        let Some(plan) = self
            .checks
            .as_ref()
            .filter(|p| !p.checks.is_empty() || !p.run.is_empty() || !p.samples.is_empty())
        else {
            facts.insert("checks".into(), "none".into());
            return Ok(());
        };
        let cluster = &self.ports.cluster;
        cluster.ensure_namespace(check::probe::NAMESPACE).await?;
        let run = self.run.to_string();
        // The run's baseline on one worker of each generation, before anything is touched:
        // recorded under each sample's name, findings only (never this step's verdict).
        for (sample, sample_plan) in &plan.samples {
            let host = Host::new(sample);
            let env = StepEnv {
                ports: self.ports,
                clock: self.clock,
                notes: self.notes,
                policy: self.policy,
                baseline: self.baseline,
                entry: self.entry,
                host: &host,
                steps: self.steps,
                target: self.target,
                scaled: Vec::new(),
                run: self.run,
                attempt: self.attempt,
                checks: None,
            };
            env.node_probes(&run, sample_plan).await?;
        }
        if !plan.samples.is_empty() {
            facts.insert(
                "sampled".into(),
                plan.samples
                    .iter()
                    .map(|(h, _)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let results = self.node_probes(&run, plan).await?;
        self.run_checks(&run, plan, facts, results).await
    }

    /// The node checks `plan` gives this node, each recorded before its probes are created
    /// and after its verdict; the echo pods they used are deleted.
    async fn node_probes(
        &self,
        run: &str,
        plan: &NodeChecks,
    ) -> Result<Vec<(Check, Verdict)>, PortError> {
        let cluster = &self.ports.cluster;
        let run = run.to_string();
        let node = self.host.as_str();
        let mut results = Vec::new();
        for c in &plan.checks {
            // Recorded by this execution of the step before the daemon stopped: kept.
            if let Some(v) = plan.done.get(&(c.id.clone(), node.to_string())) {
                results.push((c.clone(), v.clone()));
                continue;
            }
            // A check whose verdict a stopped daemon never recorded keeps its attempt: its
            // probes (named after it) are adopted, never created twice.
            let attempt = match plan.resume.get(&c.id) {
                Some(a) => *a,
                None => {
                    self.notes
                        .note(Event::CheckStarted {
                            check: c.id.clone(),
                            subject: node.to_string(),
                            boundary: plan.boundary,
                            attempt: self.attempt,
                        })
                        .await?;
                    self.attempt
                }
            };
            let verdict = match &c.kind {
                CheckKind::PodNetwork => {
                    // Echo pods on the peers and on this node: the peers are dialled from
                    // a pod and from the host network, and each dials this node's back.
                    let mut on = plan.peers.clone();
                    on.push(node.to_string());
                    match self
                        .echo_targets(&run, &on, c, plan.boundary, attempt)
                        .await?
                    {
                        Ok(mut targets) => {
                            let home = targets.pop();
                            let mut parts = Vec::new();
                            for (kind, label, back_to) in [
                                ("pod-network", "", home.as_deref()),
                                ("host-network", "hostNetwork", None),
                            ] {
                                let orders = ProbeOrders {
                                    kind,
                                    targets: &targets,
                                    nonce: "",
                                    claim: None,
                                    back_to,
                                };
                                let v = self
                                    .run_probe(&run, c, plan.boundary, attempt, orders)
                                    .await?;
                                parts.push((label, v));
                            }
                            check::combine(parts)
                        }
                        Err(why) => why,
                    }
                }
                CheckKind::Dns => {
                    // An echo pod on this node behind a probe Service: its name must
                    // resolve and its ClusterIP answer through the node's kube-proxy.
                    let own = [node.to_string()];
                    match self
                        .echo_targets(&run, &own, c, plan.boundary, attempt)
                        .await?
                    {
                        Ok(_) => {
                            let part = format!("{}-svc", c.id);
                            let svc = check::probe_name(&run, &part, plan.boundary, node, attempt);
                            let manifest =
                                check::probe::dns_service(&svc, &run, &c.id, node, attempt);
                            let ip = cluster.create_service(&manifest).await?;
                            let targets = check::probe::dns_targets(&svc, ip.as_deref());
                            let orders = ProbeOrders {
                                kind: "dns",
                                targets: &targets,
                                nonce: "",
                                claim: None,
                                back_to: None,
                            };
                            let v = self
                                .run_probe(&run, c, plan.boundary, attempt, orders)
                                .await?;
                            cluster
                                .delete_service(check::probe::NAMESPACE, &svc)
                                .await?;
                            v
                        }
                        Err(why) => why,
                    }
                }
                CheckKind::Storage { storage_class } => {
                    self.storage(&run, c, storage_class, plan.boundary, attempt)
                        .await?
                }
                CheckKind::Devices => self.devices(c, &plan.devices).await?,
                kind if kind.is_user() => {
                    let target = RunTarget {
                        subject: node,
                        generation: None,
                        node: Some(node),
                    };
                    self.user_check(&run, c, target, plan.boundary, attempt)
                        .await?
                }
                // The core hands the step only the checks it runs as probes.
                _ => continue,
            };
            self.record_verdict(&c.id, node, attempt, &verdict).await?;
            results.push((c.clone(), verdict));
        }
        // Every probe and echo pod of this node's checks: this execution's, and those of
        // executions an error cut short before they deleted theirs.
        cluster
            .delete_probes(
                check::probe::NAMESPACE,
                &[
                    (check::probe::LABEL_RUN, run.as_str()),
                    (check::probe::LABEL_SUBJECT, node),
                ],
            )
            .await?;
        Ok(results)
    }

    /// The run's own checks, when the core gave them to this step, then the step's
    /// verdict from every check's (`check::step_verdict`).
    async fn run_checks(
        &self,
        run: &str,
        plan: &NodeChecks,
        facts: &mut Facts,
        mut results: Vec<(Check, Verdict)>,
    ) -> Result<(), PortError> {
        let run = run.to_string();
        let node = self.host.as_str();
        for rc in &plan.run {
            if let Some(v) = plan.done.get(&(rc.check.id.clone(), rc.subject.clone())) {
                results.push((rc.check.clone(), v.clone()));
                continue;
            }
            let attempt = match rc.resume {
                Some(a) => a,
                None => {
                    self.notes
                        .note(Event::CheckStarted {
                            check: rc.check.id.clone(),
                            subject: rc.subject.clone(),
                            boundary: plan.boundary,
                            attempt: self.attempt,
                        })
                        .await?;
                    self.attempt
                }
            };
            let verdict = self
                .run_check(&run, rc, plan.boundary, attempt, plan)
                .await?;
            self.record_verdict(&rc.check.id, &rc.subject, attempt, &verdict)
                .await?;
            results.push((rc.check.clone(), verdict));
        }
        facts.insert(
            "checks".into(),
            plan.checks
                .iter()
                .map(|c| c.id.clone())
                .chain(
                    plan.run
                        .iter()
                        .map(|r| format!("{} {}", r.check.id, r.subject)),
                )
                .collect::<Vec<_>>()
                .join(","),
        );
        if !plan.excluded.is_empty() {
            facts.insert("excluded_at_baseline".into(), plan.excluded.join(","));
        }
        match check::step_verdict(
            plan.boundary,
            &results,
            self.policy.on_gate_failure,
            &plan.proven,
        ) {
            StepVerdict::Passed => Ok(()),
            StepVerdict::Failed { severity, why } => {
                let kind = if severity == Severity::Halt {
                    FailureKind::ChecksHalt
                } else {
                    FailureKind::Transient
                };
                let mut e = PortError::retryable(format!("node {node}: {why}"))
                    .with_kind(kind)
                    .with_fact("gate", "checks")
                    .with_fact("verdict", "failed")
                    .with_fact("severity", severity_name(severity));
                e.facts.extend(std::mem::take(facts));
                Err(e)
            }
            StepVerdict::Inconclusive { why } => {
                let mut e = PortError::retryable(format!("node {node}: {why}"))
                    .with_kind(FailureKind::ChecksInconclusive)
                    .with_fact("gate", "checks")
                    .with_fact("verdict", "inconclusive");
                e.facts.extend(std::mem::take(facts));
                Err(e)
            }
        }
    }

    /// Echo pods on the peers, Running with an IP; their `IP:port` to dial, or the verdict
    /// when they cannot be had (an echo pod is not what is checked: inconclusive).
    async fn echo_targets(
        &self,
        run: &str,
        peers: &[String],
        c: &Check,
        boundary: Boundary,
        attempt: u32,
    ) -> Result<Result<Vec<String>, Verdict>, PortError> {
        let cluster = &self.ports.cluster;
        let ns = check::probe::NAMESPACE;
        let mut names = Vec::new();
        for peer in peers {
            let name = check::probe_name(
                run,
                &format!("echo-{}", self.host.as_str()),
                boundary,
                peer,
                attempt,
            );
            cluster
                .create_probe(&check::probe::echo_pod(
                    &name,
                    run,
                    (peer, self.host.as_str()),
                    attempt,
                    &self.policy.checks,
                ))
                .await?;
            names.push(name);
        }
        let deadline = self.clock.now().plus_secs(c.timeout_secs);
        let mut targets = Vec::new();
        for name in &names {
            loop {
                match cluster.probe(ns, name).await? {
                    Some(ProbePod {
                        ip: Some(ip),
                        running: true,
                        ..
                    }) => {
                        targets.push(format!("{ip}:{}", check::probe::ECHO_PORT));
                        break;
                    }
                    _ if self.clock.now() >= deadline => {
                        return Ok(Err(Verdict::Inconclusive {
                            why: format!("echo pod {name} did not run within {}s", c.timeout_secs),
                            facts: Facts::new(),
                        }));
                    }
                    _ => self.wait(PROBE_POLL, deadline).await,
                }
            }
        }
        Ok(Ok(targets))
    }

    /// One probe pod on the node, run to its end (or its timeout) and classified; deleted
    /// once its verdict is known.
    async fn run_probe(
        &self,
        run: &str,
        c: &Check,
        boundary: Boundary,
        attempt: u32,
        orders: ProbeOrders<'_>,
    ) -> Result<Verdict, PortError> {
        let cluster = &self.ports.cluster;
        let ns = check::probe::NAMESPACE;
        let node = self.host.as_str();
        // A storage check's writer and reader are two pods of one check, as are the
        // pod-network check's pod and hostNetwork probes.
        let part = if orders.claim.is_some() || orders.kind == "host-network" {
            format!("{}-{}", c.id, orders.kind)
        } else {
            c.id.clone()
        };
        let name = check::probe_name(run, &part, boundary, node, attempt);
        let manifest = check::probe::probe_pod(
            &name,
            run,
            &c.id,
            node,
            attempt,
            orders,
            &self.policy.checks,
        );
        cluster.create_probe(&manifest).await?;
        let deadline = self.clock.now().plus_secs(c.timeout_secs);
        let end = loop {
            match cluster.probe(ns, &name).await? {
                Some(ProbePod { end: Some(end), .. }) => break end,
                None => {
                    break ProbeEnd {
                        disruption: Some(Disruption::Deleted),
                        ..ProbeEnd::default()
                    };
                }
                Some(_) if self.clock.now() >= deadline => {
                    break ProbeEnd {
                        disruption: Some(Disruption::TimedOut),
                        ..ProbeEnd::default()
                    };
                }
                Some(_) => self.wait(PROBE_POLL, deadline).await,
            }
        };
        cluster.delete_probe(ns, &name).await?;
        Ok(check::classify(&end))
    }

    /// A storage check at `boundary`: its claim (named for the baseline, or shared by the
    /// writer before the kubelet restart and the reader after it), then the boundary's
    /// probes in order (`check::probe::storage_steps`); the claim goes once it was read.
    async fn storage(
        &self,
        run: &str,
        c: &Check,
        class: &str,
        boundary: Boundary,
        attempt: u32,
    ) -> Result<Verdict, PortError> {
        let cluster = &self.ports.cluster;
        let node = self.host.as_str();
        let claim = check::probe_name(
            run,
            &c.id,
            check::probe::storage_claim_boundary(boundary),
            node,
            0,
        );
        cluster
            .create_claim(&check::probe::probe_claim(&claim, run, &c.id, node, class))
            .await?;
        let nonce = check::probe::storage_nonce(run, node, class);
        let mut verdict = Verdict::Passed {
            facts: Facts::new(),
        };
        for kind in check::probe::storage_steps(boundary) {
            let orders = ProbeOrders {
                kind,
                targets: &[],
                nonce: &nonce,
                claim: Some(&claim),
                back_to: None,
            };
            verdict = self.run_probe(run, c, boundary, attempt, orders).await?;
            if !matches!(verdict, Verdict::Passed { .. }) {
                break;
            }
        }
        if check::probe::claim_done(boundary, &verdict) {
            cluster
                .delete_claim(check::probe::NAMESPACE, &claim)
                .await?;
        }
        Ok(verdict)
    }

    /// The devices check: the node's allocatable extended resources against its baseline,
    /// read until they are all back or the check's time is up (device plugins register
    /// again some seconds after a kubelet restart).
    async fn devices(
        &self,
        c: &Check,
        baseline: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Verdict, PortError> {
        let deadline = self.clock.now().plus_secs(c.timeout_secs);
        loop {
            let verdict = match self.ports.cluster.node_status(self.host).await {
                Ok(now) => check::devices_verdict(baseline, &now.extended),
                Err(e) if e.is_retryable() => Verdict::Inconclusive {
                    why: format!("the node's status could not be read: {}", e.what),
                    facts: Facts::new(),
                },
                Err(e) => return Err(e),
            };
            if matches!(verdict, Verdict::Passed { .. }) || self.clock.now() >= deadline {
                return Ok(verdict);
            }
            self.wait(PROBE_POLL, deadline).await;
        }
    }

    /// A check's verdict on a subject, recorded.
    async fn record_verdict(
        &self,
        check: &str,
        subject: &str,
        attempt: u32,
        verdict: &Verdict,
    ) -> Result<(), PortError> {
        let (check, subject) = (check.to_string(), subject.to_string());
        self.notes
            .note(match verdict {
                Verdict::Passed { facts } => Event::CheckPassed {
                    check,
                    subject,
                    attempt,
                    facts: facts.clone(),
                },
                Verdict::Failed { detail, facts } => Event::CheckFailed {
                    check,
                    subject,
                    attempt,
                    detail: detail.clone(),
                    facts: facts.clone(),
                },
                Verdict::Inconclusive { why, facts } => Event::CheckInconclusive {
                    check,
                    subject,
                    attempt,
                    why: why.clone(),
                    facts: facts.clone(),
                },
            })
            .await
    }

    /// One of the run's own checks on its subject.
    async fn run_check(
        &self,
        run: &str,
        rc: &RunCheck,
        boundary: Boundary,
        attempt: u32,
        plan: &NodeChecks,
    ) -> Result<Verdict, PortError> {
        let version = plan.version;
        let c = &rc.check;
        let target = RunTarget {
            subject: &rc.subject,
            generation: rc.generation.as_deref(),
            node: None,
        };
        match &c.kind {
            CheckKind::Scheduling => {
                let Some(generation) = rc.generation.as_deref() else {
                    return Ok(Verdict::Inconclusive {
                        why: "a scheduling check without a generation".into(),
                        facts: Facts::new(),
                    });
                };
                let name = check::probe_name(run, &c.id, boundary, &rc.subject, attempt);
                let label = self
                    .policy
                    .generation_label
                    .as_deref()
                    .unwrap_or(check::DEFAULT_GENERATION_LABEL);
                let job = check::run::scheduling_job(
                    &name,
                    run,
                    &c.id,
                    attempt,
                    (label, generation),
                    &self.policy.checks,
                );
                self.run_job(c, &name, &job).await
            }
            CheckKind::ApiserverReadyz | CheckKind::MirrorPodsReady | CheckKind::EtcdQuorum => {
                self.control_plane(c, &plan.control_plane).await
            }
            CheckKind::Addons => {
                let Some(version) = version else {
                    return Ok(Verdict::Inconclusive {
                        why: "no control-plane version to compare the addons with".into(),
                        facts: Facts::new(),
                    });
                };
                let images = self.ports.cluster.addon_images().await?;
                Ok(check::run::addons_verdict(
                    version,
                    images.kube_proxy.as_deref(),
                    images.coredns.as_deref(),
                ))
            }
            CheckKind::Prometheus { url } => self.prometheus(c, url, &rc.baseline, boundary).await,
            CheckKind::Ingress { url, expect_status } => self.http(c, url, *expect_status).await,
            _ => self.user_check(run, c, target, boundary, attempt).await,
        }
    }

    /// One of the control plane's checks, asked again until it passes or its time is up
    /// (static pods take some seconds to restart after kubeadm, and a member to rejoin).
    async fn control_plane(
        &self,
        c: &Check,
        nodes: &[(String, Option<Version>)],
    ) -> Result<Verdict, PortError> {
        use check::control_plane as cp;
        let deadline = self.clock.now().plus_secs(c.timeout_secs);
        let timeout = self
            .ports
            .command_timeout
            .min(Duration::from_secs(c.timeout_secs.max(1)));
        loop {
            let verdict = match &c.kind {
                CheckKind::ApiserverReadyz => {
                    let mut answers = Vec::new();
                    for (name, _) in nodes {
                        let host = Host::new(name);
                        let answer = match self
                            .ports
                            .nodes
                            .run(&host, &RemoteCommand::ApiserverReadyz, timeout)
                            .await
                        {
                            Ok(out) => Ok((
                                out.facts
                                    .get("readyz_status")
                                    .and_then(|s| s.trim().parse::<u16>().ok())
                                    .unwrap_or(0),
                                out.facts.get("readyz_failing").cloned().unwrap_or_default(),
                            )),
                            Err(e) if e.is_retryable() => Err(e.what),
                            Err(e) => return Err(e),
                        };
                        answers.push((name.clone(), answer));
                    }
                    cp::readyz_verdict(&answers)
                }
                CheckKind::MirrorPodsReady => {
                    let mut seen = Vec::new();
                    for (name, _) in nodes {
                        let status = self.ports.cluster.node_status(&Host::new(name)).await?;
                        seen.push(cp::ControlPlaneSeen {
                            host: name.clone(),
                            pods: status.control_plane,
                            ready: status.control_plane_ready,
                        });
                    }
                    let expect: Vec<(String, Version)> = nodes
                        .iter()
                        .filter_map(|(n, v)| v.map(|v| (n.clone(), v)))
                        .collect();
                    cp::mirror_pods_verdict(&seen, &expect)
                }
                _ => {
                    // Asked on this node when it is a control-plane node, else on the first
                    // that answers.
                    let mut order: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
                    order.sort_by_key(|n| *n != self.host.as_str());
                    let mut verdict = Verdict::Inconclusive {
                        why: "no control-plane node to ask etcd on".into(),
                        facts: Facts::new(),
                    };
                    for name in order {
                        match self
                            .ports
                            .nodes
                            .run(&Host::new(name), &RemoteCommand::EtcdHealth, timeout)
                            .await
                        {
                            Ok(out) => {
                                let count = |k: &str| {
                                    out.facts.get(k).and_then(|v| v.trim().parse::<u32>().ok())
                                };
                                verdict = cp::etcd_verdict(count("members"), count("healthy"));
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                verdict = Verdict::Inconclusive {
                                    why: format!("etcd could not be asked on {name}: {}", e.what),
                                    facts: Facts::new(),
                                };
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    verdict
                }
            };
            if matches!(verdict, Verdict::Passed { .. }) || self.clock.now() >= deadline {
                return Ok(verdict);
            }
            self.wait(PROBE_POLL, deadline).await;
        }
    }

    /// The operator's own check: their Job (on the node for a node-scope check), an HTTP
    /// probe, or a command on this host told what it checks through its environment.
    async fn user_check(
        &self,
        run: &str,
        c: &Check,
        target: RunTarget<'_>,
        boundary: Boundary,
        attempt: u32,
    ) -> Result<Verdict, PortError> {
        match &c.kind {
            CheckKind::UserJob { manifest } => {
                let manifest: serde_json::Value = serde_json::from_str(manifest).map_err(|e| {
                    PortError::fatal(format!("check {}: its job is not JSON: {e}", c.id))
                })?;
                let name = check::probe_name(run, &c.id, boundary, target.subject, attempt);
                let job = check::run::user_job(&manifest, &name, run, &c.id, attempt, target.node)
                    .map_err(|e| PortError::fatal(e.to_string()))?;
                self.run_job(c, &name, &job).await
            }
            CheckKind::UserHttp { url, expect_status } => self.http(c, url, *expect_status).await,
            CheckKind::UserCommand { argv } => {
                let mut env = vec![
                    ("UPGRADED_RUN".to_string(), run.to_string()),
                    ("UPGRADED_CHECK".to_string(), c.id.clone()),
                    ("UPGRADED_BOUNDARY".to_string(), boundary.name().to_string()),
                    ("UPGRADED_SUBJECT".to_string(), target.subject.to_string()),
                ];
                if let Some(node) = target.node {
                    env.push(("UPGRADED_NODE".into(), node.into()));
                }
                if let Some(g) = target.generation {
                    env.push(("UPGRADED_GENERATION".into(), g.into()));
                }
                let end = self
                    .ports
                    .host
                    .command(argv, &env, Duration::from_secs(c.timeout_secs))
                    .await?;
                Ok(check::run::command_verdict(
                    end.exit_code,
                    &end.output,
                    end.timed_out,
                ))
            }
            other => Ok(Verdict::Inconclusive {
                why: format!("{other:?} is not an operator's check"),
                facts: Facts::new(),
            }),
        }
    }

    /// A check's Job, created (or adopted), followed to its end or its timeout, judged
    /// (`check::run::job_verdict`) and deleted with its pods.
    async fn run_job(
        &self,
        c: &Check,
        name: &str,
        job: &serde_json::Value,
    ) -> Result<Verdict, PortError> {
        let cluster = &self.ports.cluster;
        let ns = check::probe::NAMESPACE;
        cluster.create_job(job).await?;
        let deadline = self.clock.now().plus_secs(c.timeout_secs);
        let verdict = loop {
            let timed_out = self.clock.now() >= deadline;
            match cluster.job(ns, name).await? {
                None => {
                    break Verdict::Inconclusive {
                        why: format!("Job {name} was deleted before it ended"),
                        facts: Facts::new(),
                    };
                }
                Some(seen) => {
                    if let Some(v) = check::run::job_verdict(&c.kind, &seen, timed_out) {
                        break v;
                    }
                }
            }
            self.wait(PROBE_POLL, deadline).await;
        };
        cluster.delete_job(ns, name).await?;
        Ok(verdict)
    }

    /// GET `url` from this host; its status against `expect`.
    async fn http(&self, c: &Check, url: &str, expect: u16) -> Result<Verdict, PortError> {
        let answer = self
            .ports
            .host
            .http_get(url, Duration::from_secs(c.timeout_secs))
            .await
            .map(|(status, _)| status);
        Ok(check::run::http_verdict(url, answer, expect))
    }

    /// Prometheus's targets and alerts against the baseline's, looked at again while a new
    /// problem waits for its confirmation (`check::run::prometheus_verdict`).
    async fn prometheus(
        &self,
        c: &Check,
        url: &str,
        baseline: &std::collections::BTreeSet<String>,
        boundary: Boundary,
    ) -> Result<Verdict, PortError> {
        let base = url.trim_end_matches('/');
        let timeout = Duration::from_secs(c.timeout_secs);
        let deadline = self.clock.now().plus_secs(c.timeout_secs);
        let mut tally = check::ProblemTally::new(baseline.clone());
        loop {
            let answers = async {
                let targets = self.prometheus_get(base, "targets", timeout).await?;
                let alerts = self.prometheus_get(base, "alerts", timeout).await?;
                check::run::prometheus_problems(&targets, &alerts)
            };
            let problems = match answers.await {
                Ok(p) => p,
                Err(why) => {
                    return Ok(Verdict::Inconclusive {
                        why,
                        facts: Facts::new(),
                    });
                }
            };
            if let Some(v) = check::run::prometheus_verdict(c, boundary, &mut tally, &problems) {
                return Ok(v);
            }
            if self.clock.now() >= deadline {
                return Ok(Verdict::Inconclusive {
                    why: format!(
                        "new problems not yet seen {} times in a row within {}s: {}",
                        c.fire_after,
                        c.timeout_secs,
                        tally.streak.keys().cloned().collect::<Vec<_>>().join("; ")
                    ),
                    facts: Facts::new(),
                });
            }
            self.wait(
                Duration::from_secs(check::run::PROMETHEUS_INTERVAL_SECS),
                deadline,
            )
            .await;
        }
    }

    /// Prometheus's `/api/v1/{what}` as JSON, or why it gave none.
    async fn prometheus_get(
        &self,
        base: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let at = format!("{base}/api/v1/{what}");
        match self.ports.host.http_get(&at, timeout).await {
            Ok((200, body)) => {
                serde_json::from_slice(&body).map_err(|e| format!("GET {at} answered no JSON: {e}"))
            }
            Ok((status, _)) => Err(format!("GET {at} answered {status}")),
            Err(check::run::HttpTrouble::NoAnswer(why)) => {
                Err(format!("GET {at} got no answer: {why}"))
            }
            Err(check::run::HttpTrouble::TimedOut) => Err(format!(
                "GET {at} did not answer within {}s",
                timeout.as_secs()
            )),
        }
    }

    async fn wait(&self, step: Duration, deadline: upgraded_events::Timestamp) {
        let at = self.clock.now().plus_millis(step.as_millis() as u64);
        self.clock.sleep_until(at.min(deadline)).await;
    }
}

/// What one of the run's checks is about: its subject, its generation, the node a
/// node-scope operator's check runs on.
#[derive(Debug, Clone, Copy)]
struct RunTarget<'a> {
    subject: &'a str,
    generation: Option<&'a str>,
    node: Option<&'a str>,
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::RollbackNode => "rollback-node",
        Severity::Halt => "halt",
        Severity::Warn => "warn",
    }
}

/// Executes one step on one node; the facts go into the outcome event.
pub async fn execute(
    env: &StepEnv<'_>,
    step: &Step,
    leave_cordoned: bool,
) -> Result<Facts, PortError> {
    let ports = env.ports;
    let node = env.host;
    let mut facts = Facts::new();
    match step {
        Step::Preflight => {
            let status = ports.cluster.node_status(node).await?;
            let target = env
                .target
                .or_else(|| gate::final_version(env.steps))
                .unwrap_or(status.kubelet_version);
            facts.extend(env.remote(&RemoteCommand::Preflight { target }).await?);
            // What kubeadm 1.34 removes and a rollback below it puts back.
            if let Some(socket) = ports.cluster.node_annotation(node, CRI_SOCKET_KEY).await? {
                facts.insert("cri_socket_annotation".into(), socket);
            }
            facts.insert("unschedulable".into(), status.unschedulable.to_string());
            facts.insert("kubelet_before".into(), status.kubelet_version.to_string());
        }
        Step::Cordon => ports.cluster.cordon(node).await?,
        Step::Drain => {
            let rules = DrainRules::of(env.policy);
            facts.extend(
                drain::drain(
                    ports.cluster.as_ref(),
                    env.clock,
                    env.notes,
                    env.entry,
                    node,
                    rules,
                    env.scaled.clone(),
                )
                .await?,
            );
        }
        Step::UpgradePackages { version } => {
            let cmd = RemoteCommand::InstallPackages { version: *version };
            facts.extend(env.remote(&cmd).await?);
        }
        Step::DowngradePackages {
            version,
            kubelet_config,
            kubeadm,
        } => {
            let cmd = RemoteCommand::DowngradePackages {
                version: *version,
                kubelet_config: kubelet_config.clone(),
                kubeadm: *kubeadm,
            };
            facts.extend(env.remote(&cmd).await?);
        }
        Step::RestoreKubeletFiles {
            version,
            dir,
            server,
            cri_socket,
        } => {
            let cmd = RemoteCommand::RestoreKubeletFiles {
                version: *version,
                dir: dir.clone(),
                server: server.clone(),
            };
            facts.extend(env.remote(&cmd).await?);
            if let Some(socket) = cri_socket {
                ports
                    .cluster
                    .annotate_node(node, CRI_SOCKET_KEY, socket)
                    .await?;
                facts.insert("cri_socket_annotation".into(), socket.clone());
            }
        }
        Step::KubeadmUpgrade { version, apply } => {
            if *apply {
                // The snapshot taken before the control-plane phase may be hours old by now
                // (a pause, a window): take it again if it is older than the policy allows.
                let fresh = RemoteCommand::EtcdSnapshot {
                    reuse_younger_than_secs: Some(env.policy.etcd_snapshot_max_age_secs),
                };
                for (k, v) in env.remote(&fresh).await? {
                    facts.insert(format!("snapshot_{k}"), v);
                }
            }
            let cmd = RemoteCommand::KubeadmUpgrade {
                version: *version,
                apply: *apply,
            };
            facts.extend(env.remote(&cmd).await?);
            crate::remote::kubelet_config_verdict(node.as_str(), *version, &mut facts)?;
        }
        Step::EtcdSnapshot => {
            let cmd = RemoteCommand::EtcdSnapshot {
                reuse_younger_than_secs: None,
            };
            facts.extend(env.remote(&cmd).await?);
        }
        Step::KubeProxy { version } => {
            facts.extend(ports.cluster.set_kube_proxy(*version).await?);
        }
        Step::KubeadmDowngrade { version, apply } => {
            let cmd = RemoteCommand::KubeadmDowngrade {
                version: *version,
                apply: *apply,
            };
            facts.extend(env.remote(&cmd).await?);
        }
        Step::RestartKubelet => {
            facts.extend(env.remote(&RemoteCommand::RestartKubelet).await?);
        }
        Step::EtcdRestore(stage) => {
            facts.extend(
                env.remote(&RemoteCommand::EtcdRestore(stage.clone()))
                    .await?,
            );
        }
        Step::Verify => env.verify(&mut facts).await?,
        Step::Checks { .. } => env.checks(&mut facts).await?,
        Step::Uncordon => {
            // A drain that never finished (abort after a crash) leaves its scale-ups here.
            if !env.scaled.is_empty() {
                facts.extend(
                    drain::restore_scaled(
                        ports.cluster.as_ref(),
                        env.notes,
                        env.entry,
                        env.scaled.clone(),
                    )
                    .await?,
                );
            }
            if leave_cordoned {
                facts.insert("left_cordoned".into(), "cordoned before the run".into());
            } else {
                ports.cluster.uncordon(node).await?;
            }
        }
        // The end of a canary's soak: still Ready, and the cluster no less healthy.
        Step::Soak => {
            let status = ports.cluster.node_status(node).await?;
            if !status.ready {
                return Err(PortError::retryable(format!(
                    "node {node} became NotReady during its soak"
                )));
            }
            env.health_gate(&mut facts).await?;
        }
    }
    Ok(facts)
}

/// For steps that must not run twice: did the in-doubt attempt take effect?
pub async fn probe(env: &StepEnv<'_>, step: &Step) -> Result<(bool, Facts), PortError> {
    let node = env.host;
    let installed = || async {
        env.remote(&RemoteCommand::InstalledKubelet)
            .await?
            .get("installed")
            .and_then(|v| v.parse::<Version>().ok())
            .ok_or_else(|| {
                PortError::retryable(format!("node {node}: installed kubelet version unreadable"))
            })
    };
    match step {
        Step::UpgradePackages { version } => {
            let facts = env.remote(&RemoteCommand::InstalledKubelet).await?;
            Ok((
                upgraded_events::plan::packages_installed(*version, &facts),
                facts,
            ))
        }

        Step::RestartKubelet => {
            // Restarted means: the running kubelet is the installed one.
            let have = installed().await?;
            let running = env.ports.cluster.node_status(node).await?.kubelet_version;
            let facts = [
                ("installed".to_string(), have.to_string()),
                ("running".to_string(), running.to_string()),
            ]
            .into();
            Ok((running == have, facts))
        }
        other => Err(PortError::fatal(format!("{other} is re-run, not probed"))),
    }
}
