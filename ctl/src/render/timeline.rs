//! `upgradectl timeline`: a run's timeline as a Gantt chart in the terminal, fitted to a
//! width; `html.rs` and `trace.rs` draw the same [`Timeline`] for a browser and for
//! Perfetto.

use std::fmt::Write as _;

use upgraded_events::Timestamp;
use upgraded_events::quantity::human_secs;
use upgraded_events::timeline::{Outcome, SpanKind, Timeline};
use upgraded_events::window::rfc3339;

use super::one_line;

pub mod html;
pub mod trace;

/// The glyph of a step kind (`Step::name`), and what it stands for.
pub const GLYPHS: &[(&str, char, &str)] = &[
    ("preflight", 'P', "preflight"),
    ("cordon", 'C', "cordon"),
    ("drain", 'D', "drain"),
    ("upgrade-packages", 'U', "packages up"),
    ("downgrade-packages", 'd', "packages down"),
    ("restart-kubelet", 'R', "kubelet restart"),
    ("verify", 'V', "verify"),
    ("checks", 'T', "checks (probes)"),
    ("uncordon", 'u', "uncordon"),
    ("soak", 'S', "soak"),
    ("etcd-snapshot", 'E', "etcd snapshot"),
    ("kubeadm-upgrade-apply", 'K', "kubeadm apply"),
    ("kubeadm-upgrade-node", 'k', "kubeadm node"),
    ("kubeadm-downgrade-apply", 'K', "kubeadm apply (down)"),
    ("kubeadm-downgrade-node", 'k', "kubeadm node (down)"),
    ("kube-proxy-image", 'X', "kube-proxy image"),
];

/// Marks that are not steps.
pub const MARKS: &[(char, &str)] = &[
    ('x', "failed attempt"),
    ('?', "cut short by a daemon stop"),
    ('=', "probed after a restart"),
    ('!', "evictions blocked by a budget"),
    ('~', "waiting for a maintenance window"),
    ('#', "daemon down"),
    ('^', "operator action"),
];

pub fn glyph(kind: &str) -> char {
    if kind.starts_with("etcd-restore") {
        return 'e';
    }
    GLYPHS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map_or('*', |(_, g, _)| *g)
}

/// Columns for `[start, end]` on an axis of `width` columns.
struct Axis {
    start: i64,
    span: i64,
    width: usize,
}

impl Axis {
    fn col(&self, t: Timestamp) -> usize {
        let off = (t.0 - self.start).clamp(0, self.span);
        let c = (off as i128 * self.width as i128 / (self.span.max(1) as i128 + 1)) as usize;
        c.min(self.width.saturating_sub(1))
    }

    fn paint(&self, line: &mut [char], from: Timestamp, to: Timestamp, ch: char, over: bool) {
        let (a, b) = (self.col(from), self.col(to).max(self.col(from)));
        for c in &mut line[a..=b] {
            if over || *c == ' ' {
                *c = ch;
            }
        }
    }
}

/// A tick interval that gives labels about every 12 columns.
fn tick_ms(span_ms: i64, width: usize) -> i64 {
    const STEPS: &[i64] = &[
        60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000,
        21_600_000, 43_200_000, 86_400_000,
    ];
    let want = span_ms / (width as i64 / 12).max(1);
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= want)
        .unwrap_or(86_400_000 * ((want / 86_400_000) + 1))
}

/// `HH:MM` UTC.
fn hh_mm(t: i64) -> String {
    let m = t.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The Gantt chart in `width` columns (at least 60).
pub fn gantt(t: &Timeline, width: usize) -> String {
    let width = width.max(60);
    let name_w = t
        .rows
        .iter()
        .map(|r| one_line(r.entry.as_str()).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(12, 28);
    let bars_w = width - name_w - 4;
    let axis = Axis {
        start: t.start.0,
        span: (t.end.0 - t.start.0).max(1),
        width: bars_w,
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "run {}  {}{}  {} → {} ({})",
        t.run.map_or_else(|| "-".to_string(), |r| r.to_string()),
        t.phase,
        t.target
            .as_deref()
            .map(|v| format!(" → {}", one_line(v)))
            .unwrap_or_default(),
        rfc3339(t.start),
        rfc3339(t.end),
        human_secs(u64::try_from((t.end.0 - t.start.0) / 1000).unwrap_or(0))
    );
    // The time axis, in UTC.
    let tick = tick_ms(axis.span, bars_w);
    let mut labels = vec![' '; bars_w];
    let mut ruler = vec!['─'; bars_w];
    let mut at = (t.start.0 / tick + 1) * tick;
    let mut free_from = 0;
    while at <= t.end.0 {
        let c = axis.col(Timestamp(at));
        ruler[c] = '┬';
        let text: Vec<char> = hh_mm(at).chars().collect();
        if c >= free_from && c + text.len() <= bars_w {
            labels[c..c + text.len()].copy_from_slice(&text);
            free_from = c + text.len() + 1;
        }
        at += tick;
    }
    let pad = " ".repeat(name_w + 4);
    let _ = writeln!(
        o,
        "{pad}{} UTC",
        labels.iter().collect::<String>().trim_end()
    );
    let _ = writeln!(o, "{pad}{}", ruler.iter().collect::<String>());
    let down = |line: &mut Vec<char>| {
        for d in &t.down {
            axis.paint(line, d.from, d.to, '#', false);
        }
    };
    let (mut phase, mut batch) = (None::<&str>, None::<usize>);
    for r in &t.rows {
        if phase != Some(r.phase.as_str()) {
            let _ = writeln!(o, "{}", one_line(&r.phase));
            phase = Some(&r.phase);
            batch = None;
        }
        if batch != Some(r.batch) {
            let _ = writeln!(o, " [{}] {}", r.batch + 1, one_line(&r.batch_label));
            batch = Some(r.batch);
        }
        let mut line = vec![' '; bars_w];
        for s in &r.spans {
            if s.kind == SpanKind::Window {
                axis.paint(&mut line, s.start, s.end, '~', true);
            }
        }
        // Attempts that went wrong last, so a retry in the same column does not hide them.
        let mut bars: Vec<_> = r.bars.iter().collect();
        bars.sort_by_key(|b| matches!(b.outcome, Outcome::Failed(_) | Outcome::Interrupted));
        for b in bars {
            let ch = match &b.outcome {
                Outcome::Failed(_) => 'x',
                Outcome::Interrupted => '?',
                Outcome::Probed { .. } => '=',
                Outcome::Succeeded | Outcome::Running => glyph(&b.kind),
            };
            // An attempt cut short by a stop ran on the node until it ended there.
            let end = match (&b.outcome, b.on_node) {
                (Outcome::Interrupted, Some((_, ended))) => ended.max(b.end),
                _ => b.end,
            };
            axis.paint(&mut line, b.start, end, ch, true);
        }
        for s in &r.spans {
            if matches!(s.kind, SpanKind::Blocked { .. }) {
                axis.paint(&mut line, s.start, s.end, '!', true);
            }
        }
        down(&mut line);
        let name: String = one_line(r.entry.as_str()).chars().take(name_w).collect();
        let _ = writeln!(
            o,
            "  {name:<name_w$} │{}",
            line.iter().collect::<String>().trim_end()
        );
    }
    if !t.down.is_empty() {
        let mut line = vec![' '; bars_w];
        down(&mut line);
        let _ = writeln!(
            o,
            "  {:<name_w$} │{}",
            "daemon down",
            line.iter().collect::<String>().trim_end()
        );
    }
    if !t.actions.is_empty() {
        let mut line = vec![' '; bars_w];
        for a in &t.actions {
            line[axis.col(a.at)] = '^';
        }
        let _ = writeln!(
            o,
            "  {:<name_w$} │{}",
            "operator",
            line.iter().collect::<String>().trim_end()
        );
        for a in &t.actions {
            let _ = writeln!(o, "  ^ {}", super::action(a));
        }
    }
    for d in &t.down {
        let _ = writeln!(o, "  # {}", super::down(d));
    }
    // Who led when (`upgraded --ha`).
    for l in &t.leaders {
        let _ = writeln!(
            o,
            "  leader {} (epoch {}) {} → {}",
            one_line(&l.instance),
            l.epoch,
            rfc3339(l.start),
            rfc3339(l.end)
        );
    }
    // Readings of drift that found outliers: a mark each, then what they found.
    let drifted: Vec<_> = t.drift.iter().filter(|d| !d.reports.is_empty()).collect();
    if !drifted.is_empty() {
        let mut line = vec![' '; bars_w];
        for d in &drifted {
            line[axis.col(d.at)] = '◆';
        }
        let _ = writeln!(
            o,
            "  {:<name_w$} │{}",
            "drift",
            line.iter().collect::<String>().trim_end()
        );
        for d in drifted {
            for l in super::drift_lines(&d.reports) {
                let _ = writeln!(o, "  ◆ {}: {l}", super::drift_when(d.after));
            }
        }
    }
    // The legend: only what appears.
    let text: String = o.clone();
    let mut legend: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (kind, g, what) in GLYPHS {
        let used = t
            .rows
            .iter()
            .any(|r| r.bars.iter().any(|b| b.kind == *kind));
        if used && seen.insert(*g) {
            legend.push(format!("{g} {what}"));
        }
    }
    if t.rows
        .iter()
        .any(|r| r.bars.iter().any(|b| b.kind.starts_with("etcd-restore")))
    {
        legend.push("e etcd restore".into());
    }
    for (g, what) in MARKS {
        let body = text.split_once('\n').map_or("", |(_, b)| b);
        if body.contains(*g) {
            legend.push(format!("{g} {what}"));
        }
    }
    // Wrapped to the width.
    let mut line = String::from("legend:");
    for item in legend {
        if line.chars().count() + 2 + item.chars().count() > width {
            let _ = writeln!(o, "{line}");
            line = " ".repeat("legend:".len());
        }
        line.push_str("  ");
        line.push_str(&item);
    }
    let _ = writeln!(o, "{line}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `--ha`, each leader's tenure is a line; without, none.
    #[test]
    fn the_gantt_names_each_leaders_tenure() {
        let t: Timeline = serde_json::from_value(serde_json::json!({
            "run": null, "target": "v1.35.3", "phase": "running",
            "start": 1_795_000_000_000_i64, "end": 1_795_000_600_000_i64,
            "rows": [], "down": [], "actions": [],
            "leaders": [
                {"instance": "admin-1", "epoch": 1, "start": 1_795_000_000_000_i64,
                 "end": 1_795_000_300_000_i64},
                {"instance": "admin-2\u{1b}[2J", "epoch": 2, "start": 1_795_000_300_000_i64,
                 "end": 1_795_000_600_000_i64}
            ]
        }))
        .expect("a timeline");
        let text = gantt(&t, 100);
        assert!(
            text.contains(
                "  leader admin-1 (epoch 1) 2026-11-18T11:06:40Z → 2026-11-18T11:11:40Z\n"
            ),
            "{text}"
        );
        assert!(text.contains("  leader admin-2 [2J (epoch 2)"), "{text}");
        assert!(!text.contains('\u{1b}'));
        // The page: a band per tenure on the time scale, and the list.
        let page = html::html(&t);
        assert_eq!(page.matches("<rect class=\"tenure\"").count(), 2, "{page}");
        assert!(
            page.contains("<li>leader admin-1 (epoch 1): ")
                && page.contains("<li>leader admin-2 [2J (epoch 2): "),
            "{page}"
        );
        assert!(
            !html::html(&Timeline {
                leaders: Vec::new(),
                ..t.clone()
            })
            .contains("tenure")
        );
        let alone = Timeline {
            leaders: Vec::new(),
            ..t
        };
        assert!(!gantt(&alone, 100).contains("leader"));
    }
}
