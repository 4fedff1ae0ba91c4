//! Time formatting without a date library: the few formats the wire and the logs need.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Civil date (year, month 1..=12, day 1..=31) from days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u64,
}

fn parts(epoch_ms: u64) -> Parts {
    let secs = epoch_ms / 1000;
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts { y, mo, d, h: rem / 3600, mi: rem % 3600 / 60, s: rem % 60, ms: epoch_ms % 1000 }
}

/// `2024-01-01T12:00:00.000+0000`, the format of `LastModified`.
pub fn last_modified(epoch_ms: u64) -> String {
    let p = parts(epoch_ms);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000", p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms)
}

/// `2024-01-01T12:00:00.000Z`, RFC 3339 with milliseconds.
pub fn rfc3339_ms(epoch_ms: u64) -> String {
    let p = parts(epoch_ms);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms)
}

/// `2024/01/01`, the date prefix of a log stream name.
pub fn stream_date(epoch_ms: u64) -> String {
    let p = parts(epoch_ms);
    format!("{:04}/{:02}/{:02}", p.y, p.mo, p.d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2024-02-29T13:14:15.678Z
        let ms = 1_709_212_455_678;
        assert_eq!(last_modified(ms), "2024-02-29T13:14:15.678+0000");
        assert_eq!(rfc3339_ms(ms), "2024-02-29T13:14:15.678Z");
        assert_eq!(stream_date(ms), "2024/02/29");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
