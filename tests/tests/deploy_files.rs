//! The deploy files people load into their own tools: Prometheus's alert rules and the
//! Grafana dashboard name only metrics the daemon serves, and are well-formed (promtool is not
//! on these machines; the rules' shape and expressions are checked here instead).

use std::collections::BTreeSet;
use std::path::Path;

fn deploy(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The metric families `/metrics` serves (their `# TYPE` lines).
fn served() -> BTreeSet<String> {
    let process = upgraded_events::metrics::ProcessStats {
        log_bytes: Some(0),
        leader: Some(("a".into(), true)),
        ..Default::default()
    };
    let text =
        upgraded_events::metrics::Metrics::default().render("test", &Default::default(), &process);
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `upgraded_…` name in an expression is served (a histogram's `_bucket`, `_sum` and
/// `_count` are its family's); brackets balance.
fn check_expr(expr: &str, served: &BTreeSet<String>) {
    let mut depth: Vec<char> = Vec::new();
    for c in expr.chars() {
        match c {
            '(' | '{' | '[' => depth.push(c),
            ')' | '}' | ']' => {
                let open = depth.pop().unwrap_or_else(|| panic!("unbalanced: {expr}"));
                let want = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                assert_eq!(open, want, "mismatched brackets: {expr}");
            }
            _ => {}
        }
    }
    assert!(depth.is_empty(), "unbalanced: {expr}");
    let mut rest = expr;
    while let Some(i) = rest.find("upgraded_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| served.contains(*f))
            .unwrap_or(&name);
        assert!(served.contains(family), "{name} is not served: {expr}");
        rest = &rest[i + name.len()..];
    }
}

/// The checker refuses what it should.
#[test]
#[should_panic(expected = "upgraded_outbox_lag_records is not served")]
fn an_unserved_metric_is_refused() {
    check_expr("upgraded_outbox_lag_records > 100", &served());
}

#[test]
fn the_alert_rules_name_served_metrics_and_say_what_to_do() {
    let served = served();
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&deploy("prometheus/alerts.yaml")).expect("YAML");
    let rules = doc["groups"][0]["rules"].as_sequence().expect("rules");
    assert!(rules.len() >= 3);
    let mut names = BTreeSet::new();
    for r in rules {
        let name = r["alert"].as_str().expect("alert name");
        assert!(names.insert(name.to_string()), "{name} twice");
        let expr = r["expr"].as_str().expect("expr");
        check_expr(expr, &served);
        assert!(
            r["for"].as_str().is_some_and(|f| f.ends_with('m')),
            "{name}: for"
        );
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity"
        );
        assert!(r["annotations"]["summary"].is_string(), "{name}: summary");
        assert!(
            r["annotations"]["description"].is_string(),
            "{name}: description"
        );
    }
    for want in [
        "UpgradedRunHalted",
        "UpgradedNodeParked",
        "UpgradedNoProgress",
    ] {
        assert!(names.contains(want), "{want} missing");
    }
}

#[test]
fn the_dashboard_queries_served_metrics() {
    let served = served();
    let d: serde_json::Value =
        serde_json::from_str(&deploy("grafana/upgraded.json")).expect("JSON");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "panel ids are unique"
        );
        assert!(p["title"].is_string());
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            check_expr(expr, &served);
            queried.extend(served.iter().filter(|m| expr.contains(m.as_str())).cloned());
        }
    }
    // Runs, nodes by state, step durations and refused evictions, as the issue asks.
    for m in [
        "upgraded_runs",
        "upgraded_node_passes",
        "upgraded_step_duration_seconds",
        "upgraded_evictions_refused_total",
    ] {
        assert!(queried.contains(m), "no panel shows {m}");
    }
}

/// The NATS cluster's configurations are what the pinned nats-server accepts (`-t`), three
/// servers routed to each other, with JetStream.
#[test]
fn the_nats_cluster_configurations_are_valid_and_route_to_each_other() {
    let server = upgraded_tests::nats::find_binary().expect("nats-server (scripts/setup)");
    for i in 1..=3 {
        let name = format!("nats/admin-{i}.conf");
        let text = deploy(&name);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(&name);
        let out = std::process::Command::new(&server)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("nats-server -t");
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("server_name: admin-{i}\n")),
            "{name}"
        );
        assert!(text.contains("jetstream {"), "{name}");
        assert!(
            text.contains("sync_interval: always"),
            "{name}: acknowledged is on disk"
        );
        for j in (1..=3).filter(|j| *j != i) {
            assert!(
                text.contains(&format!("nats-route://admin-{j}.example.internal:6222")),
                "{name} routes to admin-{j}"
            );
        }
    }
}
