//! Estimates laid out in time: each batch starts after the previous one and its wait, inside
//! a maintenance window it fits in whole (a batch never straddles a window's end).

use jiff::tz::TimeZone;
use upgraded_events::Timestamp;
use upgraded_events::window::{occurrences, rfc3339, slot, tz};

use crate::PhaseReport;
use crate::policy::PlanPolicy;

/// Fills every batch's and phase's estimate, start, end and window fit; returns the plan's
/// start.
pub fn place(phases: &mut [PhaseReport], policy: &PlanPolicy, start: Timestamp) -> String {
    let occ = occurrences(&policy.windows, start);
    let mut t = start;
    let mut first = None;
    let n_batches: usize = phases.iter().map(|p| p.batches.len()).sum();
    let mut seen = 0;
    for p in phases.iter_mut() {
        let mut phase_secs = 0;
        for b in &mut p.batches {
            seen += 1;
            b.estimate_secs = b.units.iter().map(|u| u.estimate_secs).max().unwrap_or(0);
            let (at, fits) = match slot(&policy.windows, t, b.estimate_secs, &occ) {
                Some(at) => (at, true),
                // Too long for any window: start when the next one opens, and say so.
                None => (
                    occ.iter()
                        .find(|(_, e)| *e > t.0)
                        .map_or(t, |&(s, _)| Timestamp(s.max(t.0))),
                    false,
                ),
            };
            let end = at.plus_secs(b.estimate_secs);
            b.start = rfc3339(at);
            b.end = rfc3339(end);
            b.fits_window = fits;
            first.get_or_insert(at);
            phase_secs += b.estimate_secs;
            t = end;
            if seen < n_batches {
                t = t.plus_secs(policy.wait_between_batches_secs);
                phase_secs += policy.wait_between_batches_secs;
            }
        }
        p.estimate_secs = phase_secs;
        p.start = p
            .batches
            .first()
            .map(|b| b.start.clone())
            .unwrap_or_default();
        p.end = p.batches.last().map(|b| b.end.clone()).unwrap_or_default();
        p.fits_windows = p.batches.iter().all(|b| b.fits_window);
    }
    rfc3339(first.unwrap_or(start))
}

/// Friday from noon, in the first window's time zone (UTC without windows).
pub fn is_friday_afternoon(rfc: &str, policy: &PlanPolicy) -> bool {
    let zone = policy.windows.first().map_or(TimeZone::UTC, tz);
    rfc.parse::<jiff::Timestamp>().is_ok_and(|t| {
        let z = t.to_zoned(zone);
        z.weekday() == jiff::civil::Weekday::Friday && z.hour() >= 12
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friday_afternoon() {
        let p = PlanPolicy::default();
        assert!(is_friday_afternoon("2026-11-27T14:00:00Z", &p));
        assert!(!is_friday_afternoon("2026-11-27T09:00:00Z", &p));
        assert!(!is_friday_afternoon("2026-11-26T14:00:00Z", &p));
    }
}
