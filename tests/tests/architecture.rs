//! The architecture, checked (as rust-analyzer's `tidy.rs` does): the pure crates stay pure,
//! the client does not depend on the daemon, the core's modules import in one direction, and
//! every source file says what it is for. An invariant nobody checks drifts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The names under `[dependencies]` of a crate's Cargo.toml (not dev- or build-).
fn dependencies(krate: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("Cargo.toml");
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside
            && !line.is_empty()
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once(['=', '.'])
        {
            out.insert(name.trim().to_string());
        }
    }
    out
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Source without its `#[cfg(test)]` module (tests may use what the crate may not).
fn non_test_source(p: &Path) -> String {
    let text = std::fs::read_to_string(p).expect("source");
    text.split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_pure_crates_depend_only_on_what_does_no_io() {
    // Adding to these lists is a design decision: say in the commit why the crate does no I/O.
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "events",
            &[
                "serde",
                "serde_json",
                "bincode",
                "statig",
                "uuid",
                "crc32fast",
                "thiserror",
                "jiff",
                "schemars",
            ][..],
        ),
        ("api", &["upgraded-events", "upgraded-planner", "serde"][..]),
        (
            "planner",
            &[
                "upgraded-events",
                "serde",
                "serde_json",
                "thiserror",
                "serde_yaml",
                "serde_path_to_error",
                "jiff",
                "schemars",
            ][..],
        ),
    ]);
    for (krate, ok) in allowed {
        let extra: Vec<String> = dependencies(krate)
            .into_iter()
            .filter(|d| !ok.contains(&d.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{krate} must do no I/O, but depends on {extra:?}"
        );
        // Nor does it reach the operating system through std.
        for p in sources(&root().join(krate).join("src")) {
            let src = non_test_source(&p);
            for forbidden in [
                "std::fs",
                "std::net",
                "std::process",
                "std::thread",
                "std::env",
                "SystemTime",
                "Instant::now",
            ] {
                assert!(
                    !src.contains(forbidden),
                    "{} uses {forbidden}: the pure crates take time and data as arguments",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn the_client_does_not_depend_on_the_daemon() {
    let deps = dependencies("ctl");
    assert!(
        !deps.contains("upgraded-daemon"),
        "ctl depends on the daemon crate: {deps:?}"
    );
}

/// `crate::module` edges between the top-level modules of a crate's `src/`.
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = root().join(krate).join("src");
    let mut graph = BTreeMap::new();
    for p in sources(&dir) {
        let Some(module) = p.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if p.parent() != Some(dir.as_path()) || module == "lib" || module == "main" {
            continue;
        }
        let src = non_test_source(&p);
        let mut deps = BTreeSet::new();
        for (i, _) in src.match_indices("crate::") {
            let name: String = src[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
        graph.insert(module.to_string(), deps);
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cores_modules_import_in_one_direction() {
    for krate in ["events", "planner"] {
        let graph = module_graph(krate);
        assert!(graph.len() > 3, "{krate}: no modules found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import circle {}", cycle.join(" -> "));
        }
    }
    // The check itself finds a circle when there is one.
    let g = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    for krate in ["events", "planner", "daemon", "ctl", "sim", "tests"] {
        for p in sources(&root().join(krate).join("src")) {
            let text = std::fs::read_to_string(&p).expect("source");
            if !text.starts_with("//!") {
                missing.push(p.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not open with a //! line: {missing:?}"
    );
}
