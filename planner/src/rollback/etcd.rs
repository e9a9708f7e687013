//! `rollback --to … --etcd restore-snapshot --confirm-data-loss`: etcd's disaster recovery
//! from the verified snapshot the run took before its control plane went past the target.
//! Never chosen by the daemon, never without the operator's confirmation: it loses every
//! write made since the snapshot, and the plan says how old that is.
//!
//! It comes after the control plane is back through kubeadm (the restored data then matches
//! the older control plane: kubeadm's ConfigMaps, the addons' objects), and follows etcd's
//! procedure, one stage per batch over every control-plane node so a stage is done
//! everywhere before the next starts:
//! 1. every kube-apiserver stopped (nothing writes to etcd any more);
//! 2. every member stopped and restored from the same snapshot as a new cluster (a new
//!    token, each member's own name and peer URL as `etcdctl member list` showed them when
//!    the snapshot was taken), the fresh data dir swapped in, the old one kept;
//! 3. every member started;
//! 4. once every member is healthy in one cluster: the apiservers, the controller-managers,
//!    the schedulers and the kubelets restarted (they must not keep what they cached from the
//!    lost writes).

use upgraded_events::plan::{Batch, EtcdRestore, EtcdRestoreStage, NodePlan, Role};
use upgraded_events::quantity::human_secs;
use upgraded_events::{Entry, Host, Step, Timestamp, Version};

use super::{Forward, Rollback, RollbackError, Snapshot};

/// What a rollback does with etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EtcdChoice {
    /// etcd stays at its newer version with its data, as kubeadm leaves it.
    #[default]
    Keep,
    /// etcd's data goes back to the snapshot: every write since is lost.
    RestoreSnapshot { confirm_data_loss: bool },
}

/// `name=peerURL,…` as the snapshot step recorded `etcdctl member list`: each name a node
/// name, each URL plain (these reach an etcd command line on the nodes, quoted; still only
/// what a member list can hold is accepted).
pub fn parse_members(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for m in s.split(',').filter(|m| !m.is_empty()) {
        let (name, url) = m
            .split_once('=')
            .ok_or_else(|| format!("{m:?} is not name=peerURL"))?;
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !name_ok {
            return Err(format!("member name {name:?} is not a node name"));
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or("");
        if rest.is_empty()
            || !rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        {
            return Err(format!(
                "member {name}'s peer URL {url:?} is not a plain URL"
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("member {name} is listed twice"));
        }
        out.push((name.to_string(), url.to_string()));
    }
    if out.is_empty() {
        return Err("no member".into());
    }
    Ok(out)
}

/// Appends the restore's four stages to `out` and says what happens to etcd.
pub(super) fn restore(
    out: &mut Rollback<'_>,
    fwd: &Forward,
    to: Version,
    snapshot: Option<&Snapshot>,
    now: Option<Timestamp>,
    confirmed: bool,
) -> Result<String, RollbackError> {
    let run = fwd.run();
    let snap = snapshot.ok_or(RollbackError::NoSnapshot { to, run })?;
    let missing = |what| RollbackError::MissingInput {
        node: snap.host.to_string(),
        run,
        what,
    };
    let sha = snap
        .sha256
        .clone()
        .filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or(missing("the snapshot's sha256"))?;
    let copy = snap
        .local_copy
        .clone()
        .ok_or(missing("the daemon's copy of the snapshot (local_copy)"))?;
    let members = parse_members(
        snap.members
            .as_deref()
            .ok_or(missing("etcd's member list (members)"))?,
    )
    .map_err(|why| RollbackError::Members { why, run })?;
    // Every control-plane node of the run: each apiserver is stopped, whether or not the
    // node holds a member.
    let mut cps: Vec<Host> = Vec::new();
    for (_, n) in fwd.state.plan.nodes() {
        if n.role == Role::ControlPlane && !cps.contains(&n.host()) {
            cps.push(n.host());
        }
    }
    cps.sort();
    for (name, _) in &members {
        if !cps.iter().any(|h| h.as_str() == name) {
            return Err(RollbackError::MemberElsewhere {
                member: name.clone(),
                run,
            });
        }
    }
    let age = now.map(|n| human_secs(u64::try_from((n.0 - snap.at.0) / 1000).unwrap_or(0)));
    let described = format!(
        "{} on {}, taken {}{}{}",
        snap.path,
        snap.host,
        upgraded_events::window::rfc3339(snap.at),
        age.as_deref()
            .map(|a| format!(", {a} ago"))
            .unwrap_or_default(),
        snap.revision
            .as_deref()
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default()
    );
    if !confirmed {
        return Err(RollbackError::Unconfirmed {
            snapshot: described,
        });
    }
    let token = format!(
        "upgraded-restore-{}-{}",
        &sha[..12],
        now.map_or(0, |n| n.0 / 1000)
    );
    let initial_cluster = members
        .iter()
        .map(|(n, u)| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let from = out.versions.newest_apiserver().unwrap_or(to);
    let stage = |host: &Host, tag: &str, stage: EtcdRestoreStage| NodePlan {
        name: Entry::new(format!("{host}@etcd-{tag}")),
        host: Some(host.clone()),
        role: Role::ControlPlane,
        from,
        steps: vec![Step::EtcdRestore(stage)],
        estimate_secs: 0,
    };
    let holders: Vec<&Host> = cps
        .iter()
        .filter(|h| members.iter().any(|(n, _)| n == h.as_str()))
        .collect();
    let mut batch = |label: &str, nodes: Vec<NodePlan>, why: String| {
        out.batches.push(Batch {
            label: label.into(),
            phase: "rollback: etcd restore".into(),
            nodes,
        });
        out.why.push(why);
    };
    batch(
        "etcd restore: stop every apiserver",
        cps.iter()
            .map(|h| stage(h, "stop-apiserver", EtcdRestoreStage::StopApiserver))
            .collect(),
        format!(
            "{}: kube-apiserver stopped (manifest parked) so nothing writes to etcd",
            names(cps.iter())
        ),
    );
    batch(
        "etcd restore: restore every member",
        holders
            .iter()
            .map(|h| {
                let url = members
                    .iter()
                    .find(|(n, _)| n == h.as_str())
                    .map(|(_, u)| u.clone())
                    .unwrap_or_default();
                let step = EtcdRestoreStage::Restore(EtcdRestore {
                    snapshot_sha256: sha.clone(),
                    snapshot_copy: copy.clone(),
                    member: h.to_string(),
                    peer_url: url,
                    initial_cluster: initial_cluster.clone(),
                    token: token.clone(),
                });
                stage(h, "restore", step)
            })
            .collect(),
        format!(
            "{}: member stopped, the daemon's copy of {} (sha256 {}…) put on the node and checked, \
             restored as member of a new cluster (token {token}, {initial_cluster}), the old data \
             dir kept beside the new",
            names(holders.iter().copied()),
            snap.path,
            &sha[..12]
        ),
    );
    batch(
        "etcd restore: start every member",
        holders
            .iter()
            .map(|h| stage(h, "start", EtcdRestoreStage::StartEtcd))
            .collect(),
        format!("{}: etcd started again", names(holders.iter().copied())),
    );
    batch(
        "etcd restore: restart the control plane",
        cps.iter()
            .map(|h| {
                let mut n = stage(h, "restart", EtcdRestoreStage::StartControlPlane);
                n.steps.push(Step::Verify);
                n
            })
            .collect(),
        format!(
            "{}: once every member is healthy in one cluster, kube-apiserver started, \
             kube-controller-manager, kube-scheduler and the kubelet restarted, then verified",
            names(cps.iter())
        ),
    );
    Ok(format!(
        "etcd is restored from the snapshot taken before the upgrade past {to} ({described}): \
         EVERY WRITE MADE SINCE IS LOST. After the control plane is back at {to}: every \
         apiserver stopped, every member ({}) restored from the same snapshot as a new cluster, \
         etcd started, then the apiservers, controller-managers, schedulers and kubelets \
         restarted. etcd's binary stays at its newer version (kubeadm does not downgrade it); \
         the old data dirs are kept beside the new ones.",
        members
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn names<'a>(hosts: impl Iterator<Item = &'a Host>) -> String {
    hosts.map(Host::as_str).collect::<Vec<_>>().join(", ")
}
