//! Replay speed of the pure fold: a 200-node run's records (plan, every step started and
//! succeeded) folded into state, and decode + fold from stored bytes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use upgraded_events::codec::{decode, encode};
use upgraded_events::{
    Actor, Event, Facts, Json, NodeInfo, Plan, Policy, Record, Role, RunState, Timestamp, Version,
};

fn run_log(nodes: usize) -> Vec<Record> {
    let inv: Vec<NodeInfo> = (0..nodes)
        .map(|i| NodeInfo {
            name: format!("node-{i:04}"),
            role: if i < 3 {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            version: Version::new(1, 32, 4),
        })
        .collect();
    let target = Version::new(1, 35, 3);
    let plan = Plan::basic_rolling(&inv, target, 10, true, |_, m| m % 10).expect("plan");
    let run = upgraded_events::RunId::from_u128(9);
    let mut events = vec![
        Event::RunPlanned {
            target,
            plan: Json(plan.clone()),
            policy: Json(Policy::default()),
            by: Actor::daemon(),
        },
        Event::RunStarted {
            by: Actor::daemon(),
        },
    ];
    for (_, n) in plan.nodes() {
        for step in &n.steps {
            events.push(Event::StepStarted {
                node: n.name.clone(),
                step: step.clone(),
                attempt: 1,
            });
            events.push(Event::StepSucceeded {
                node: n.name.clone(),
                step: step.clone(),
                attempt: 1,
                facts: Facts::new(),
            });
        }
    }
    events.push(Event::RunCompleted);
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Record {
            run,
            seq: i as u64,
            at: Timestamp(i as i64),
            epoch: 0,
            event,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let log = run_log(200);
    let bytes: Vec<Vec<u8>> = log.iter().map(|r| encode(r).expect("encode")).collect();
    let mut g = c.benchmark_group("replay_pure");
    g.throughput(Throughput::Elements(log.len() as u64));
    g.bench_function("fold_200_nodes", |b| {
        b.iter(|| RunState::replay(&log).next_seq)
    });
    g.bench_function("decode_and_fold_200_nodes", |b| {
        b.iter(|| {
            let mut s = RunState::default();
            for b in &bytes {
                s.apply(&decode(b).expect("decode"));
            }
            s.next_seq
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
