//! The timeline as one self-contained HTML file: inline SVG and CSS, no script, nothing
//! fetched; tooltips are SVG `<title>`s, phases fold as `<details>`, a legend says what each
//! colour is.

use std::fmt::Write as _;

use upgraded_events::Timestamp;
use upgraded_events::quantity::human_secs;
use upgraded_events::timeline::{Bar, Outcome, Row, SpanKind, Timeline};
use upgraded_events::window::rfc3339;

use super::{GLYPHS, hh_mm, tick_ms};

const ROW_H: i64 = 18;
const NAME_W: i64 = 220;
const CHART_W: i64 = 1100;
const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// Text for XML: the five special characters escaped, control characters dropped.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A CSS class name for a step kind.
fn class(kind: &str) -> String {
    let k: String = kind
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("k-{k}")
}

/// One colour per step kind (and one for the etcd restore's stages).
const COLOURS: &[(&str, &str)] = &[
    ("preflight", "#9e9e9e"),
    ("cordon", "#ffb300"),
    ("drain", "#fb8c00"),
    ("upgrade-packages", "#1e88e5"),
    ("downgrade-packages", "#5e35b1"),
    ("restart-kubelet", "#00acc1"),
    ("verify", "#43a047"),
    ("uncordon", "#c0ca33"),
    ("soak", "#81c784"),
    ("etcd-snapshot", "#6d4c41"),
    ("kubeadm-upgrade-apply", "#3949ab"),
    ("kubeadm-upgrade-node", "#7986cb"),
    ("kubeadm-downgrade-apply", "#8e24aa"),
    ("kubeadm-downgrade-node", "#ba68c8"),
    ("kube-proxy-image", "#00897b"),
];

struct Scale {
    start: i64,
    span: i64,
}

impl Scale {
    fn x(&self, t: Timestamp) -> f64 {
        let off = (t.0 - self.start).clamp(0, self.span) as f64;
        NAME_W as f64 + off * CHART_W as f64 / self.span.max(1) as f64
    }
}

fn when(a: Timestamp, b: Timestamp) -> String {
    format!(
        "{} → {} ({})",
        rfc3339(a),
        rfc3339(b),
        human_secs(u64::try_from((b.0 - a.0) / 1000).unwrap_or(0))
    )
}

/// A step attempt's bar; its `id` is the anchor spans and notifications link to.
fn bar(o: &mut String, s: &Scale, y: i64, entry: &str, b: &Bar) {
    let (x0, x1) = (s.x(b.start), s.x(b.end));
    let (state, note) = match &b.outcome {
        Outcome::Succeeded => ("ok", "succeeded".to_string()),
        Outcome::Failed(e) => ("failed", format!("failed: {e}")),
        Outcome::Interrupted => ("interrupted", "cut short: the daemon stopped".into()),
        Outcome::Probed { done } => (
            "probed",
            format!(
                "probed after a restart: {}",
                if *done { "found done" } else { "not done" }
            ),
        ),
        Outcome::Running => ("running", "no outcome recorded".into()),
    };
    let note = match b.on_node {
        Some((a, e)) => format!("{note}; on the node {}", when(a, e)),
        None => note,
    };
    let _ = writeln!(
        o,
        "<rect id=\"{}\" class=\"bar {} {state}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\"><title>{} attempt {}: {}; {}</title></rect>",
        upgraded_events::trace::step_anchor(entry, &b.step, b.attempt),
        class(&b.kind),
        y + 3,
        (x1 - x0).max(1.0),
        ROW_H - 6,
        esc(&b.step),
        b.attempt,
        when(b.start, b.end),
        esc(&note)
    );
}

fn row(o: &mut String, s: &Scale, y: i64, r: &Row) {
    let _ = writeln!(
        o,
        "<text class=\"name\" x=\"{}\" y=\"{}\">{}</text>",
        NAME_W - 6,
        y + ROW_H - 5,
        esc(r.entry.as_str())
    );
    for sp in &r.spans {
        let (cls, what) = match &sp.kind {
            SpanKind::Window => ("window", "waiting for a maintenance window".to_string()),
            SpanKind::Blocked { budgets } => (
                "blocked",
                format!("evictions refused by {}", budgets.join(", ")),
            ),
        };
        let (x0, x1) = (s.x(sp.start), s.x(sp.end));
        let _ = writeln!(
            o,
            "<rect class=\"span {cls}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\"><title>{}: {}</title></rect>",
            y + 1,
            (x1 - x0).max(1.0),
            ROW_H - 2,
            esc(&what),
            when(sp.start, sp.end)
        );
    }
    for b in &r.bars {
        bar(o, s, y, r.entry.as_str(), b);
    }
}

/// Under `upgraded --ha`: a strip of who led when, one band per tenure, on the charts' time
/// scale, and the same as a list.
fn leaders(o: &mut String, s: &Scale, t: &Timeline) {
    if t.leaders.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<svg class=\"leaders\" xmlns=\"{SVG_NS}\" width=\"{}\" height=\"{ROW_H}\"><text class=\"name\" x=\"{}\" y=\"{}\">leader</text>",
        NAME_W + CHART_W + 20,
        NAME_W - 6,
        ROW_H - 6
    );
    for (i, l) in t.leaders.iter().enumerate() {
        let (x0, x1) = (s.x(l.start), s.x(l.end));
        let fill = if i % 2 == 0 { "#5c6bc0" } else { "#26a69a" };
        let _ = writeln!(
            o,
            "<rect class=\"tenure\" x=\"{x0:.1}\" y=\"2\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\"><title>leader {} (epoch {}): {}</title></rect>",
            (x1 - x0).max(1.0),
            ROW_H - 4,
            esc(&l.instance),
            l.epoch,
            esc(&when(l.start, l.end))
        );
    }
    o.push_str("</svg>\n<ul class=\"leaders\">");
    for l in &t.leaders {
        let _ = write!(
            o,
            "<li>leader {} (epoch {}): {}</li>",
            esc(&l.instance),
            l.epoch,
            esc(&when(l.start, l.end))
        );
    }
    o.push_str("</ul>\n");
}

/// The HTML document.
pub fn html(t: &Timeline) -> String {
    let s = Scale {
        start: t.start.0,
        span: (t.end.0 - t.start.0).max(1),
    };
    let title = format!(
        "run {} {}{}",
        t.run.map_or_else(|| "-".to_string(), |r| r.to_string()),
        t.phase,
        t.target
            .as_deref()
            .map(|v| format!(" → {v}"))
            .unwrap_or_default()
    );
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    let _ = writeln!(o, "<title>upgraded timeline: {}</title>", esc(&title));
    o.push_str("<style>\nbody{font:13px system-ui,sans-serif;margin:16px;color:#222}\nsvg{display:block}\n.name{text-anchor:end;font:12px monospace}\n.axis{stroke:#ccc}\n.tick{font:11px monospace;fill:#555}\n.batch{font:italic 11px sans-serif;fill:#666}\n.bar{stroke:#0003}\n.bar.failed{fill:#e53935!important}\n.bar.interrupted{fill:#fff!important;stroke:#e53935;stroke-dasharray:2}\n.bar.probed{fill:#000!important}\n.span.window{fill:#90caf966}\n.span.blocked{fill:#e5393555}\n.down{fill:#0000001f}\n.action{stroke:#6a1b9a;stroke-width:2}\n.drift{stroke:#ef6c00;stroke-width:2;stroke-dasharray:4 2}\n.legend span{display:inline-block;margin-right:12px}\n.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;border:1px solid #0003}\nsummary{font-weight:600;margin:8px 0;cursor:pointer}\n");
    for (kind, colour) in COLOURS {
        let _ = writeln!(o, ".{}{{fill:{colour};background:{colour}}}", class(kind));
    }
    o.push_str(".k-etcd-restore{fill:#4e342e;background:#4e342e}\n");
    o.push_str("</style></head><body>\n");
    let _ = writeln!(o, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(o, "<p>{}</p>", esc(&when(t.start, t.end)));
    leaders(&mut o, &s, t);
    // Legend.
    o.push_str("<div class=\"legend\">");
    let mut seen = std::collections::BTreeSet::new();
    for (kind, _, what) in GLYPHS {
        if t.rows
            .iter()
            .any(|r| r.bars.iter().any(|b| b.kind == *kind))
            && seen.insert(*what)
        {
            let _ = write!(
                o,
                "<span><i class=\"{}\"></i>{}</span>",
                class(kind),
                esc(what)
            );
        }
    }
    o.push_str("<span><i style=\"background:#e53935\"></i>failed attempt</span><span><i style=\"background:#fff;border-color:#e53935\"></i>cut short by a daemon stop</span><span><i style=\"background:#e5393555\"></i>evictions blocked</span><span><i style=\"background:#90caf966\"></i>maintenance-window wait</span><span><i style=\"background:#0000001f\"></i>daemon down</span><span><i style=\"background:#6a1b9a\"></i>operator action</span></div>\n");
    // One collapsible SVG per phase.
    let mut i = 0;
    while i < t.rows.len() {
        let phase = &t.rows[i].phase;
        let j = t.rows[i..]
            .iter()
            .position(|r| &r.phase != phase)
            .map_or(t.rows.len(), |k| i + k);
        let rows = &t.rows[i..j];
        let batches = {
            let mut b: Vec<usize> = rows.iter().map(|r| r.batch).collect();
            b.dedup();
            b.len() as i64
        };
        let height = 24 + (rows.len() as i64 + batches) * ROW_H;
        let _ = writeln!(
            o,
            "<details open><summary>{} ({} {})</summary>",
            esc(phase),
            rows.len(),
            if rows.len() == 1 { "pass" } else { "passes" }
        );
        let _ = writeln!(
            o,
            "<svg xmlns=\"{SVG_NS}\" width=\"{}\" height=\"{height}\">",
            NAME_W + CHART_W + 20
        );
        // Time axis, in UTC.
        let tick = tick_ms(s.span, (CHART_W / 8) as usize);
        let mut at = (t.start.0 / tick + 1) * tick;
        while at <= t.end.0 {
            let x = s.x(Timestamp(at));
            let _ = writeln!(
                o,
                "<line class=\"axis\" x1=\"{x:.1}\" y1=\"16\" x2=\"{x:.1}\" y2=\"{height}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"12\">{}</text>",
                hh_mm(at)
            );
            at += tick;
        }
        for d in &t.down {
            let (x0, x1) = (s.x(d.from), s.x(d.to));
            let _ = writeln!(
                o,
                "<rect class=\"down\" x=\"{x0:.1}\" y=\"16\" width=\"{:.1}\" height=\"{}\"><title>daemon down: {}</title></rect>",
                (x1 - x0).max(1.0),
                height - 16,
                when(d.from, d.to)
            );
        }
        let mut y = 20;
        let mut batch = None;
        for r in rows {
            if batch != Some(r.batch) {
                let _ = writeln!(
                    o,
                    "<text class=\"batch\" x=\"4\" y=\"{}\">batch {}: {}</text>",
                    y + ROW_H - 5,
                    r.batch + 1,
                    esc(&r.batch_label)
                );
                y += ROW_H;
                batch = Some(r.batch);
            }
            row(&mut o, &s, y, r);
            y += ROW_H;
        }
        for d in t.drift.iter().filter(|d| !d.reports.is_empty()) {
            let x = s.x(d.at);
            let _ = writeln!(
                o,
                "<line class=\"drift\" x1=\"{x:.1}\" y1=\"16\" x2=\"{x:.1}\" y2=\"{height}\"><title>{} drift {}: {}</title></line>",
                rfc3339(d.at),
                esc(&super::super::drift_when(d.after)),
                esc(&super::super::drift_lines(&d.reports).join("; "))
            );
        }
        for a in &t.actions {
            let x = s.x(a.at);
            let _ = writeln!(
                o,
                "<line class=\"action\" x1=\"{x:.1}\" y1=\"16\" x2=\"{x:.1}\" y2=\"{height}\"><title>{} {} by {}{}</title></line>",
                rfc3339(a.at),
                esc(&a.what),
                esc(&a.by.name),
                if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", esc(&a.reason))
                }
            );
        }
        o.push_str("</svg></details>\n");
        i = j;
    }
    o.push_str("</body></html>\n");
    o
}
