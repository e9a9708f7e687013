//! `upgradectl replay --at`: the run as it stood at an instant, as text.

use std::fmt::Write as _;

use upgraded_events::replay::Replayed;
use upgraded_events::window::rfc3339;

use super::{one_line, status};

pub fn replay(r: &Replayed) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "at {} ({})",
        rfc3339(r.at),
        r.seq.map_or_else(
            || "before the first record".to_string(),
            |s| format!("record {s}")
        )
    );
    o.push_str(&status(Some(&r.status)));
    if let Some(w) = &r.status.waiting {
        let _ = writeln!(o, "  waiting: {}", one_line(w));
    }
    for n in &r.status.nodes {
        if let Some(b) = &n.blocked {
            let _ = writeln!(
                o,
                "  blocked: {} — {}",
                one_line(n.name.as_str()),
                super::blocked(b)
            );
        }
        if let Some(p) = &n.parked {
            let _ = writeln!(
                o,
                "  parked: {} — {}",
                one_line(n.name.as_str()),
                one_line(p)
            );
        }
    }
    for f in &r.in_flight {
        let _ = writeln!(o, "  in flight (outcome not recorded yet): {}", one_line(f));
    }
    for w in &r.status.scaled {
        let _ = writeln!(
            o,
            "  scaled up, not restored: {}/{}/{} {} → {} (by {})",
            w.kind,
            w.namespace,
            w.name,
            w.original,
            w.scaled,
            one_line(w.node.as_str())
        );
    }
    for a in &r.actions {
        let _ = writeln!(o, "  {}", super::action(a));
    }
    for d in &r.down {
        let _ = writeln!(o, "  {}", super::down(d));
    }
    o
}
