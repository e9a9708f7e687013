//! Maintenance windows in time: when a window is open, and the earliest moment some work
//! fits inside one. Time zones come from jiff's bundled database (no file reads).

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A maintenance window, validated: weekdays, local start and end, and its time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// 0 = Monday … 6 = Sunday.
    pub days: Vec<u8>,
    /// Minutes after local midnight.
    pub start_minute: u16,
    pub end_minute: u16,
    pub timezone: String,
}

/// How far ahead windows are searched (a year of weeks).
const HORIZON_DAYS: i64 = 400;

pub fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

pub fn tz(w: &Window) -> TimeZone {
    TimeZone::get(&w.timezone).unwrap_or(TimeZone::UTC)
}

/// Window occurrences `[start, end)` in ms that end after `after`, in order.
pub fn occurrences(windows: &[Window], after: Timestamp) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for w in windows {
        let zone = tz(w);
        let Ok(t) = jiff::Timestamp::from_millisecond(after.0) else {
            continue;
        };
        let first: Date = t.to_zoned(zone.clone()).date();
        for d in -1..HORIZON_DAYS {
            let Ok(day) = first.checked_add(jiff::Span::new().days(d)) else {
                continue;
            };
            let wd = day.weekday().to_monday_zero_offset() as u8;
            if !w.days.contains(&wd) {
                continue;
            }
            let at = |date: Date, minute: u16| -> Option<i64> {
                let (h, m) = ((minute / 60) as i8, (minute % 60) as i8);
                let (date, h) = if h == 24 {
                    (date.tomorrow().ok()?, 0)
                } else {
                    (date, h)
                };
                let dt = date.to_datetime(Time::new(h, m, 0, 0).ok()?);
                Some(dt.to_zoned(zone.clone()).ok()?.timestamp().as_millisecond())
            };
            let end_day = if w.end_minute <= w.start_minute {
                day.tomorrow().ok()
            } else {
                Some(day)
            };
            if let (Some(s), Some(e)) = (
                at(day, w.start_minute),
                end_day.and_then(|ed| at(ed, w.end_minute)),
            ) && e > after.0
            {
                out.push((s, e));
            }
        }
    }
    out.sort_unstable();
    out
}

/// The earliest start at or after `t` where `secs` fit in one window; `None` when no
/// window is long enough.
pub fn slot(windows: &[Window], t: Timestamp, secs: u64, occ: &[(i64, i64)]) -> Option<Timestamp> {
    if windows.is_empty() {
        return Some(t);
    }
    let need = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    occ.iter()
        .filter(|(_, e)| *e > t.0)
        .map(|&(s, e)| (s.max(t.0), e))
        .find(|&(s, e)| s.saturating_add(need) <= e)
        .map(|(s, _)| Timestamp(s))
}

/// The earliest moment at or after `t` when `secs` of work fit inside one maintenance
/// window (`t` itself when there are no windows); `None` when no window in the next weeks is
/// long enough.
pub fn earliest_start(windows: &[Window], t: Timestamp, secs: u64) -> Option<Timestamp> {
    slot(windows, t, secs, &occurrences(windows, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_across_midnight_in_a_time_zone() {
        // Tuesday 2026-11-24 10:00 UTC; window Tue/Thu 22:00-04:00 Europe/Berlin (UTC+1).
        let start = Timestamp(
            "2026-11-24T10:00:00Z"
                .parse::<jiff::Timestamp>()
                .expect("t")
                .as_millisecond(),
        );
        let w = Window {
            days: vec![1, 3],
            start_minute: 22 * 60,
            end_minute: 4 * 60,
            timezone: "Europe/Berlin".into(),
        };
        let occ = occurrences(std::slice::from_ref(&w), start);
        let at = slot(std::slice::from_ref(&w), start, 3600, &occ).expect("fits");
        assert_eq!(rfc3339(at), "2026-11-24T21:00:00Z");
        // Seven hours do not fit a six-hour window.
        assert_eq!(slot(std::slice::from_ref(&w), start, 7 * 3600, &occ), None);
        // Five hours, starting late in the window, move to Thursday's.
        let late = Timestamp(at.0 + 2 * 3600 * 1000);
        let at2 = slot(std::slice::from_ref(&w), late, 5 * 3600, &occ).expect("fits");
        assert_eq!(rfc3339(at2), "2026-11-26T21:00:00Z");
    }
}
