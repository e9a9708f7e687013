//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `1e9`) and Go-style durations (`1h30m`).

/// CPU in millicores, rounded up (the scheduler counts a `0.0001` request as 1m).
pub fn cpu_millis(q: &str) -> Result<u64, String> {
    let v = parse(q)?;
    Ok((v * 1000.0).ceil() as u64)
}

/// Memory (or any byte count), rounded up.
pub fn bytes(q: &str) -> Result<u64, String> {
    let v = parse(q)?;
    Ok(v.ceil() as u64)
}

fn parse(q: &str) -> Result<f64, String> {
    let q = q.trim();
    let bad = || format!("{q:?} is not a Kubernetes quantity (like 500m, 2, 1.5Gi, 128974848)");
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (num, suffix) = match suffix.strip_prefix(['e', 'E']) {
        // An exponent, not the `E` (exa) suffix, when digits follow.
        Some(exp)
            if !exp.is_empty()
                && exp
                    .trim_start_matches(['+', '-'])
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            (q, "")
        }
        _ => (num, suffix),
    };
    let base: f64 = num.parse().map_err(|_| bad())?;
    if !base.is_finite() || base < 0.0 {
        return Err(bad());
    }
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return Err(bad()),
    };
    Ok(base * mult)
}

/// `90s`, `5m`, `1h30m`, `2h`, `45` (seconds) → seconds.
pub fn duration_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration (like 90s, 5m, 1h30m)");
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// `90` → `1m30s`, for tables and runbooks.
pub fn human_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// `1500` millicores → `1.5`; bytes → `2.0Gi`.
pub fn human_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

pub fn human_bytes(b: u64) -> String {
    const GI: f64 = 1024.0 * 1024.0 * 1024.0;
    const MI: f64 = 1024.0 * 1024.0;
    let f = b as f64;
    if f >= GI {
        format!("{:.1}Gi", f / GI)
    } else {
        format!("{:.0}Mi", (f / MI).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("100u"), Ok(1));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("128974848"), Ok(128_974_848));
        assert_eq!(bytes("129e6"), Ok(129_000_000));
        assert_eq!(bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(bytes("123Mi"), Ok(123 * 1024 * 1024));
        assert!(bytes("12Qi").is_err());
        assert!(bytes("").is_err());
        assert!(cpu_millis("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("90s"), Ok(90));
        assert_eq!(duration_secs("1h30m"), Ok(5400));
        assert_eq!(duration_secs("45"), Ok(45));
        assert!(duration_secs("5 minutes").is_err());
        assert!(duration_secs("5m3").is_err());
        assert_eq!(human_secs(5400), "1h30m");
        assert_eq!(human_secs(90), "1m30s");
    }
}
