//! Numbers, sizes, times and durations as the UI shows them.

use crate::clock::now_ms;

/// `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    if n == 0 {
        return "0 B".into();
    }
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `12,345`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`.
pub fn duration(ms: Option<u64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) if ms < 3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        Some(ms) => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `2026-11-21 23:58:01 UTC`.
pub fn time(ms: Option<u64>) -> String {
    ms.and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "–".into())
}

/// `5 s ago`.
pub fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(t) => format!("{} ago", duration(Some(now_ms().saturating_sub(t)))),
    }
}

/// Percent of `done` in `total`, 0..=100.
pub fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).map_or(0, |p| p.min(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(duration(Some(61_000)), "1m 01s");
        assert_eq!(duration(Some(1500)), "1.5 s");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(percent(3, 4), 75);
        assert_eq!(percent(1, 0), 0);
    }
}
