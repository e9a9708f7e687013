//! The timeline of a recorded run with everything an incident review looks for: a step that
//! failed and was retried, a drain blocked by a budget, a pause by an operator, a daemon
//! killed and restarted (a gap), and a wait for a maintenance window. Recorded on the
//! in-process harness (virtual time, so the same every time), then drawn:
//! - the terminal chart against a snapshot (`tests/snapshots/timeline.txt`,
//!   `UPDATE_SNAPSHOTS=1` rewrites it);
//! - the Chrome trace checked against the Trace Event format's required fields;
//! - the HTML checked for scripts and URLs, then loaded in Debian's headless chromium with
//!   the network off: one bar per step attempt, every pass named, nothing fetched, no console
//!   errors, and a screenshot that is not blank.
//!
//! The browser part needs chromium (`scripts/setup` installs it); without it the test fails.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use upgraded_events::Record;
use upgraded_events::timeline::{self, Timeline};
use upgraded_harness::{Harness, scenario};
use upgraded_sim::server::ApiFault;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `HH:MM` UTC of the virtual epoch + `minutes`.
fn hh_mm(minutes: i64) -> String {
    let base = upgraded_sim::clock::VIRTUAL_EPOCH as i64 / 60_000;
    let m = (base + minutes).rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The recorded run's records.
async fn incident() -> Vec<Record> {
    // Window A closes 12 minutes in, B opens at minute 40 (each pass is estimated at about
    // 8 minutes): whatever does not fit in A waits.
    let policy = format!(
        "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {{maxUnavailable: 1, canaries: 0}}
waitBetweenBatches: 1m
drainTimeout: 30m
retries: {{backoff: 1s, maxBackoff: 5s}}
durations: {{preflight: 1m, etcdSnapshot: 1m, kubeadmApply: 1m, kubeadmNode: 1m, drain: 1m, upgradePackages: 1m, restartKubelet: 1m, verify: 1m}}
maintenanceWindows:
  - {{days: [mon, tue, wed, thu, fri, sat, sun], start: '{}', end: '{}'}}
  - {{days: [mon, tue, wed, thu, fri, sat, sun], start: '{}', end: '{}'}}
",
        hh_mm(-10),
        hh_mm(12),
        hh_mm(40),
        hh_mm(600)
    );
    let mut h = Harness::new(scenario("lab", 7), &policy).await;
    // The first cordon is refused once by the API server: a failed attempt, then a retry.
    h.sim.add_api_fault(ApiFault {
        method: Some("PATCH".into()),
        path_contains: "/api/v1/nodes/".into(),
        status: 500,
        delay_ms: 0,
        remaining: 1,
    });
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    // Once started, the app's budget refuses every eviction until someone fixes it.
    h.sim
        .world()
        .faults
        .blocking_pdbs
        .insert("default/app".into());
    h.until_record(&run, DAY, |r| r["event"].get("EvictionBlocked").is_some())
        .await;
    tokio::time::sleep(Duration::from_secs(240)).await;
    h.sim.world().faults.blocking_pdbs.clear();
    // An operator pauses the run to look, and resumes it ten minutes later.
    h.until_record(&run, DAY, |r| {
        r["event"]["StepSucceeded"]["step"] == "Uncordon"
            && r["event"]["StepSucceeded"]["node"] == "w-1"
    })
    .await;
    h.json(
        Method::POST,
        "/v1/run/pause",
        Some(&json!({"reason": "check w-1's pods"})),
    )
    .await
    .expect("pause");
    tokio::time::sleep(Duration::from_secs(600)).await;
    h.json(Method::POST, "/v1/run/resume", None)
        .await
        .expect("resume");
    // The daemon is killed in the middle of w-2's drain and is back seven minutes later.
    h.until_record(&run, DAY, |r| {
        r["event"]["StepStarted"]["step"] == "Drain" && r["event"]["StepStarted"]["node"] == "w-2"
    })
    .await;
    h.crash();
    tokio::time::sleep(Duration::from_secs(420)).await;
    h.restart().await;
    h.until_phase("completed", 2 * DAY).await;
    h.events(&run)
        .await
        .into_iter()
        .map(|r| serde_json::from_value(r).expect("a record"))
        .collect()
}

fn snapshot(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, got).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == got,
        "{} differs (UPDATE_SNAPSHOTS=1 rewrites it):\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

/// The run id is the only thing that differs from one recording to the next.
fn anonymous(mut t: Timeline) -> Timeline {
    t.run = None;
    t
}

#[tokio::test(start_paused = true)]
async fn an_incidents_timeline_in_the_terminal_as_a_trace_and_in_a_browser() {
    let records = incident().await;
    let t = anonymous(timeline::of(&records));
    // What the review looks for is there.
    let bars: Vec<_> = t.rows.iter().flat_map(|r| &r.bars).collect();
    assert!(
        bars.iter()
            .any(|b| matches!(b.outcome, timeline::Outcome::Failed(_))),
        "a failed attempt"
    );
    assert!(
        bars.iter()
            .any(|b| matches!(b.outcome, timeline::Outcome::Interrupted)),
        "a step cut short by the kill"
    );
    let spans: Vec<_> = t.rows.iter().flat_map(|r| &r.spans).collect();
    assert!(
        spans
            .iter()
            .any(|s| matches!(&s.kind, timeline::SpanKind::Blocked { budgets } if budgets == &["pdb/default/app".to_string()])),
        "{spans:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.kind == timeline::SpanKind::Window && s.end.0 - s.start.0 > 10 * 60_000),
        "{spans:?}"
    );
    assert_eq!(t.down.len(), 1, "{:?}", t.down);
    assert!(t.down[0].to.0 - t.down[0].from.0 >= 420_000);
    assert_eq!(
        t.actions
            .iter()
            .map(|a| a.what.as_str())
            .collect::<Vec<_>>(),
        ["pause", "resume"]
    );

    // The terminal chart.
    let text = upgraded_ctl::render::timeline::gantt(&t, 120);
    for line in text.lines() {
        assert!(line.chars().count() <= 120, "wider than 120: {line}");
    }
    snapshot("timeline.txt", &text);

    // The Chrome trace: every event has what the Trace Event format requires.
    let trace = upgraded_ctl::render::timeline::trace::chrome_trace(&t);
    check_trace(&trace, bars.len());

    // The HTML: self-contained, then in a real browser.
    let page = upgraded_ctl::render::timeline::html::html(&t);
    assert!(!page.to_lowercase().contains("<script"), "a script");
    let urls: Vec<&str> = page
        .match_indices("://")
        .map(|(i, _)| &page[page[..i].rfind(['"', '\'', '(', ' ']).map_or(0, |p| p + 1)..i + 3])
        .collect();
    assert!(
        urls.iter().all(|u| *u == "http://"),
        "only the SVG namespace: {urls:?}"
    );
    assert_eq!(
        page.matches("http://").count(),
        page.matches("http://www.w3.org/2000/svg").count()
    );
    in_chromium(&page, &t);
}

fn check_trace(trace: &Value, bars: usize) {
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let mut complete = 0;
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        assert!(e["name"].is_string(), "name: {e}");
        assert!(e["pid"].is_u64(), "pid: {e}");
        match ph {
            "X" => {
                assert!(
                    e["ts"].is_i64() && e["dur"].as_i64().is_some_and(|d| d >= 0),
                    "{e}"
                );
                assert!(e["tid"].is_u64(), "{e}");
                complete += 1;
            }
            "M" => {
                assert!(
                    matches!(e["name"].as_str(), Some("process_name" | "thread_name")),
                    "{e}"
                );
                assert!(e["args"]["name"].is_string(), "{e}");
            }
            "i" => {
                assert!(e["ts"].is_i64(), "{e}");
                assert!(matches!(e["s"].as_str(), Some("g" | "p" | "t")), "{e}");
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    assert!(
        complete >= bars,
        "{complete} complete events for {bars} bars"
    );
}

/// What chromium made of a page: its DOM, its log (console messages included), and the
/// URLs the page asked for (the browser's own background requests, whose initiator is "not
/// an origin", are not the page's).
struct Loaded {
    dom: String,
    log: String,
    fetched: Vec<String>,
}

/// Headless chromium in a network namespace of its own (only a loopback that is down: the
/// network is off, nothing leaves the machine), with a fresh profile.
fn chromium(dir: &Path, page: &Path, extra: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir_in(dir).expect("profile");
    let out = Command::new("unshare")
        .args([
            "--net",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("unshare and chromium run (scripts/setup installs chromium)");
    assert!(out.status.success(), "chromium: {out:?}");
    out
}

fn load(dir: &Path, name: &str, html: &str) -> Loaded {
    let page = dir.join(name);
    std::fs::write(&page, html).expect("write");
    let netlog = dir.join(format!("{name}.netlog.json"));
    let out = chromium(
        dir,
        &page,
        &[
            "--dump-dom".into(),
            format!("--log-net-log={}", netlog.display()),
        ],
    );
    let log: Value =
        serde_json::from_slice(&std::fs::read(&netlog).expect("net log")).expect("net log JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64();
    let fetched = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"].as_u64() == start_job)
        .filter(|e| e["params"]["initiator"] != "not an origin")
        .filter_map(|e| e["params"]["url"].as_str())
        .filter(|u| *u != format!("file://{}", page.display()))
        .map(String::from)
        .collect();
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
        fetched,
    }
}

fn in_chromium(page: &str, t: &Timeline) {
    let dir = tempfile::tempdir().expect("tmp");
    // The checks can fail: a page that fetches and logs an error is caught by both.
    let bad = load(
        dir.path(),
        "bad.html",
        "<!DOCTYPE html><html><body><script>console.error('boom')</script><img src=\"http://example.invalid/x.png\"></body></html>",
    );
    assert_eq!(bad.fetched, ["http://example.invalid/x.png"]);
    assert!(bad.log.contains(":CONSOLE"), "{}", bad.log);

    let good = load(dir.path(), "timeline.html", page);
    let bars: usize = t.rows.iter().map(|r| r.bars.len()).sum();
    assert_eq!(
        good.dom.matches(" class=\"bar ").count(),
        bars,
        "one bar per attempt"
    );
    // Each with the anchor a span's `cicd.pipeline.task.run.url.full` links to.
    assert_eq!(good.dom.matches("<rect id=\"step-").count(), bars);
    for r in &t.rows {
        assert!(
            good.dom.contains(&format!(">{}</text>", r.entry.as_str())),
            "{} is named",
            r.entry
        );
    }
    assert!(!good.log.contains(":CONSOLE"), "console: {}", good.log);
    assert!(good.fetched.is_empty(), "fetched: {:?}", good.fetched);
    // A screenshot, not blank: far bigger than a blank page's.
    let shot = |name: &str, html: &str| {
        let page = dir.path().join(name);
        std::fs::write(&page, html).expect("write");
        let png = dir.path().join(format!("{name}.png"));
        chromium(
            dir.path(),
            &page,
            &[format!("--screenshot={}", png.display())],
        );
        std::fs::read(&png).expect("a screenshot")
    };
    let png = shot("shot.html", page);
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let blank = shot("blank.html", "<!DOCTYPE html><html><body></body></html>");
    assert!(
        png.len() > 4 * blank.len(),
        "the screenshot ({} bytes) looks blank ({} bytes for an empty page)",
        png.len(),
        blank.len()
    );
}
