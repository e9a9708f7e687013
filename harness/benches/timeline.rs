//! The post-incident views of a 250-node run: a `large-250` upgrade is recorded once on the
//! in-process harness (virtual time), exported, and then criterion measures what
//! `upgradectl timeline --file F --html out.html` does with it: read and check the export,
//! fold the timeline, draw the terminal chart and the HTML page. The page's size is printed
//! (it must stay under 2 MB). Also what the log's other consumers fold from the same run:
//! its trace (the spans and their SDK form, as `export --otlp` sends them) and its
//! notifications.
//!
//! `cargo bench -p upgraded-harness --bench timeline`

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use upgraded_daemon::log::EventLog;
use upgraded_events::{Actor, Record, Version};
use upgraded_harness::{Harness, Options};
use upgraded_planner::policy::PlanPolicy;
use upgraded_sim::scenario;

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 10%, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
retries: {backoff: 10s, maxBackoff: 1m}
";

/// A whole `large-250` upgrade's records.
fn record() -> Vec<Record> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let world = scenario::build("large-250", upgraded_harness::sim_clock(), 1).expect("world");
        let policy = PlanPolicy::from_yaml(POLICY).expect("policy");
        let h = Harness::with(world, policy, Options::default()).await;
        let daemon = h.daemon();
        let mut status = daemon.status();
        let (run, _) = daemon
            .start(Version::new(1, 35, 3), Actor::daemon(), false, true)
            .await
            .expect("start");
        let run = run.expect("a run");
        loop {
            let done = status.borrow_and_update().as_ref().is_some_and(|s| {
                s.phase.is_terminal() || s.phase == upgraded_events::run::RunPhase::Halted
            });
            if done {
                break;
            }
            status.changed().await.expect("status");
        }
        daemon.log().read(run, 0).expect("records")
    })
}

fn views(c: &mut Criterion) {
    let t0 = Instant::now();
    let records = record();
    let export = upgraded_ctl::export::write(&records).expect("export");
    let t = upgraded_events::timeline::of(&records);
    let page = upgraded_ctl::render::timeline::html::html(&t);
    let bars: usize = t.rows.iter().map(|r| r.bars.len()).sum();
    println!(
        "large-250: {} records ({} in the export), {} passes, {} bars; HTML {:.2} MB; recorded in {:.1} s",
        records.len(),
        export.len(),
        t.rows.len(),
        bars,
        page.len() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    assert!(page.len() < 2_000_000, "the page is {} bytes", page.len());
    c.bench_function("timeline --file --html, 250 nodes", |b| {
        b.iter(|| {
            let records = upgraded_ctl::export::read(&export).expect("read");
            let t = upgraded_events::timeline::of(&records);
            let text = upgraded_ctl::render::timeline::gantt(&t, 120);
            let page = upgraded_ctl::render::timeline::html::html(&t);
            (text.len(), page.len())
        })
    });
    let ctx = upgraded_events::trace::TraceContext {
        cluster: "prod".into(),
        timeline_url: "https://ops.example/{run}.html".into(),
    };
    let spans = upgraded_events::trace::TraceFold::spans(ctx.clone(), &records);
    let mut nf = upgraded_events::notify::NoticeFold::new("prod", "x/{run}", "upgradectl");
    let notices: usize = records.iter().map(|r| nf.apply(r).len()).sum();
    println!("large-250: {} spans, {notices} notices", spans.len());
    c.bench_function("trace of a 250-node run (fold + SDK spans)", |b| {
        b.iter(|| {
            let spans = upgraded_events::trace::TraceFold::spans(ctx.clone(), &records);
            spans.iter().map(upgraded_otlp::span_data).count()
        })
    });
    c.bench_function("notices of a 250-node run", |b| {
        b.iter(|| {
            let mut f = upgraded_events::notify::NoticeFold::new("prod", "x/{run}", "upgradectl");
            records.iter().map(|r| f.apply(r).len()).sum::<usize>()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = views
}
criterion_main!(benches);
