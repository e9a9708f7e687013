//! Golden byte samples of every event variant: decoding what older builds wrote must keep
//! working. Samples are `golden/<Kind>.bin`, then `<Kind>.2.bin`, … when the encoding of a
//! kind legitimately changes (e.g. the JSON inside a plan gains a nicer form). Every sample
//! must decode to the expected value; the newest one per kind must equal what this build
//! writes. `UPDATE_GOLDEN=1 cargo test -p upgraded-events --test golden` adds a new numbered
//! sample when the newest differs; it never rewrites an existing one.

use std::path::PathBuf;

use upgraded_events::check::Boundary;
use upgraded_events::codec::{decode, encode};
use upgraded_events::inventory::Inventory;
use upgraded_events::plan::{Batch, NodePlan, Role};
use upgraded_events::{
    Actor, Event, EventKind, Facts, Json, Plan, Policy, Record, Step, Timestamp, Version,
};

fn actor() -> Actor {
    Actor {
        uid: Some(1000),
        name: "alice".into(),
    }
}

fn facts() -> Facts {
    [("kubelet_version".to_string(), "v1.33.7".to_string())].into()
}

/// One sample per kind. Exhaustive over `EventKind::ALL`, so a new kind needs a sample.
fn sample(kind: EventKind) -> Event {
    let node = upgraded_events::Entry::new("worker-07");
    let step = Step::UpgradePackages {
        version: Version::new(1, 33, 7),
    };
    match kind {
        EventKind::RunPlanned => Event::RunPlanned {
            target: Version::new(1, 35, 3),
            plan: Json(Plan {
                undoes: None,
                target: Some(Version::new(1, 35, 3)),
                batches: vec![Batch {
                    label: "workers 1/1".into(),
                    phase: String::new(),
                    nodes: vec![NodePlan {
                        name: node,
                        host: None,
                        role: Role::Worker,
                        from: Version::new(1, 32, 4),
                        steps: vec![
                            Step::Preflight,
                            Step::Cordon,
                            Step::Drain,
                            step,
                            Step::Uncordon,
                        ],
                        estimate_secs: 0,
                    }],
                }],
            }),
            policy: Json(Policy::default()),
            by: actor(),
        },
        EventKind::RunStarted => Event::RunStarted { by: actor() },
        EventKind::RunPaused => Event::RunPaused {
            by: actor(),
            reason: "lunch".into(),
        },
        EventKind::RunResumed => Event::RunResumed { by: actor() },
        EventKind::RunHalted => Event::RunHalted {
            reason: "node worker-07: drain failed 3 time(s)".into(),
        },
        EventKind::RunCompleted => Event::RunCompleted,
        EventKind::AbortRequested => Event::AbortRequested {
            by: actor(),
            reason: "rollback window".into(),
        },
        EventKind::RunAborted => Event::RunAborted,
        EventKind::RunRecovered => Event::RunRecovered { pid: 4242 },
        EventKind::StepStarted => Event::StepStarted {
            node,
            step,
            attempt: 1,
        },
        EventKind::StepSucceeded => Event::StepSucceeded {
            node,
            step,
            attempt: 1,
            facts: facts(),
        },
        EventKind::StepFailed => Event::StepFailed {
            node,
            step: Step::Drain,
            attempt: 2,
            error: "eviction of prod/redis-0 refused by PDB prod/redis".into(),
            facts: facts(),
        },
        EventKind::StepProbed => Event::StepProbed {
            node,
            step: Step::RestartKubelet,
            attempt: 1,
            done: true,
            facts: facts(),
        },
        EventKind::ClusterObserved => Event::ClusterObserved {
            apiserver: Version::new(1, 33, 5),
            inventory: Json(
                Inventory::from_kubectl_json(include_str!(
                    "../../planner/tests/fixtures/seed-cluster.json"
                ))
                .expect("seed fixture"),
            ),
        },
        EventKind::EvictionBlocked => Event::EvictionBlocked {
            node,
            pod: "prod/redis-0".into(),
            pdb: "prod/redis".into(),
            disruptions_allowed: 0,
        },
        EventKind::NodeParked => Event::NodeParked {
            node,
            reason: "drain blocked for 300s by PDB prod/redis".into(),
            uncordon: true,
        },
        EventKind::WorkloadScaled => Event::WorkloadScaled {
            node,
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "redis".into(),
            from: 3,
            to: 4,
            restore: false,
        },
        EventKind::RollbackRequested => Event::RollbackRequested {
            reason: "node worker-07: verify failed 3 time(s): not Ready; rolling the whole run back (policy rollback-run)".into(),
        },
        EventKind::NodeRollingBack => Event::NodeRollingBack {
            node,
            reason: "node worker-07: verify failed 3 time(s): node worker-07 is not Ready".into(),
            steps: vec![
                Step::DowngradePackages {
                    version: Version::new(1, 32, 4),
                    kubelet_config: Some("/var/lib/upgraded/kubelet-config/v1.32.4.yaml".into()),
                    kubeadm: true,
                },
                Step::RestartKubelet,
                Step::Verify,
                Step::Uncordon,
            ],
        },
        EventKind::CheckStarted => Event::CheckStarted {
            check: "pod-network".into(),
            subject: "worker-07".into(),
            boundary: Boundary::AfterCanary,
            attempt: 2,
        },
        EventKind::CheckPassed => Event::CheckPassed {
            check: "pod-network".into(),
            subject: "worker-07".into(),
            attempt: 2,
            facts: [("dialled".to_string(), "4".to_string())].into(),
        },
        EventKind::CheckFailed => Event::CheckFailed {
            check: "storage/local-path".into(),
            subject: "worker-07".into(),
            attempt: 1,
            detail: "the reader read nothing back: the volume is empty".into(),
            facts: facts(),
        },
        EventKind::CheckInconclusive => Event::CheckInconclusive {
            check: "dns".into(),
            subject: "worker-07".into(),
            attempt: 3,
            why: "the probe was evicted".into(),
            facts: Facts::new(),
        },
        EventKind::DriftObserved => Event::DriftObserved {
            after: Some(2),
            generations: vec!["dell-r640".into()],
            reports: Json(vec![upgraded_events::drift::DriftReport {
                generation: "dell-r640 at v1.34.6".into(),
                nodes: 6,
                fields: vec![upgraded_events::drift::FieldDrift {
                    field: "kubelet:reservedSystemCPUs".into(),
                    level: upgraded_events::drift::Match::Must,
                    majority: "\"0-1\"".into(),
                    outliers: vec![("worker-07".into(), "unset".into())],
                }],
            }]),
        },
        EventKind::LeaderChanged => Event::LeaderChanged {
            instance: "admin-2".into(),
            epoch: 3,
        },
    }
}

fn record(kind: EventKind) -> Record {
    Record {
        run: upgraded_events::RunId::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
        seq: 42,
        at: Timestamp(1_795_000_000_000),
        // A leader's record is written in format 2, which carries its epoch.
        epoch: if kind == EventKind::LeaderChanged {
            3
        } else {
            0
        },
        event: sample(kind),
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn every_variant_decodes_from_its_committed_bytes() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut missing = Vec::new();
    for kind in EventKind::ALL {
        let want = record(kind);
        assert_eq!(want.event.kind(), kind);
        let now = encode(&want).expect("encode");
        let name = |n: usize| match n {
            1 => dir().join(format!("{}.bin", kind.name())),
            n => dir().join(format!("{}.{n}.bin", kind.name())),
        };
        let mut samples = Vec::new();
        while let Ok(b) = std::fs::read(name(samples.len() + 1)) {
            samples.push(b);
        }
        for (i, bytes) in samples.iter().enumerate() {
            let path = name(i + 1);
            let got = decode(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(got, want, "{} decodes to something else", path.display());
        }
        if samples.last() != Some(&now) {
            if update {
                std::fs::create_dir_all(dir()).expect("mkdir golden");
                std::fs::write(name(samples.len() + 1), &now).expect("write golden");
            } else if samples.is_empty() {
                missing.push(name(1).display().to_string());
            } else {
                panic!(
                    "{} no longer matches what this build writes: if the change is compatible \
                     (old samples still decode), add a sample with UPDATE_GOLDEN=1",
                    name(samples.len()).display()
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing golden samples (UPDATE_GOLDEN=1 writes them): {missing:?}"
    );
}
