//! The words explanations are written in: sizes, times, and ids inside prose.
//!
//! Shared by the explainer's own sentences and by whatever renders events for people, so
//! that "50.0 MiB" or "2026-11-25 20:01:02.123" read the same in a summary, an advice line
//! and a table.

use std::ops::Range;

/// `1536` → `1.5 KiB`; below 1 KiB, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Local wall-clock time with milliseconds, as people read logs: `2026-11-25 20:01:02.123`.
pub fn local_time(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(ts) => ts.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        Err(_) => us.to_string(),
    }
}

/// The first line of `s` (errors and reasons may carry more; one line is what prose quotes).
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Byte ranges of the full ids (32 hex digits, whole words only) written in `text`.
pub fn full_ids(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j - i == 32 && (j == b.len() || !b[j].is_ascii_alphanumeric()) {
                out.push(i..j);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_prose_are_found_as_whole_words_only() {
        let full = "d1d1d1d1d1d1d1d10000000000000064";
        assert_eq!(full_ids(&format!("task {full} died")), vec![5..37]);
        assert!(full_ids(&format!("x{full}")).is_empty());
        assert!(full_ids(&format!("{full}0")).is_empty());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(50 << 20), "50.0 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
