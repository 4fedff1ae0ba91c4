//! The two date formats SigV4 meets: ISO 8601 basic (`20150830T123600Z`, `X-Amz-Date`) and
//! the HTTP IMF-fixdate (`Sun, 30 Aug 2015 12:36:00 GMT`, `Date`). Pure integer arithmetic,
//! on the project's one civil-date implementation (`quarters_types::time`).

use quarters_types::time::{civil as civil_from_days, days_from_civil};

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0')))
}

fn to_epoch(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<u64> {
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + s)).ok()
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the Unix epoch (`None` if malformed).
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    to_epoch(
        i64::from(digits(&b[0..4])?),
        digits(&b[4..6])?,
        digits(&b[6..8])?,
        digits(&b[9..11])?,
        digits(&b[11..13])?,
        digits(&b[13..15])?,
    )
}

/// Formats seconds since the Unix epoch as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Converts an HTTP `Date` header in IMF-fixdate form (`Sun, 30 Aug 2015 12:36:00 GMT`, the
/// only form RFC 9110 lets senders generate) into `YYYYMMDDTHHMMSSZ`.
pub(crate) fn http_date_to_amz(s: &str) -> Option<String> {
    let b = s.trim().as_bytes();
    // "Sun, 30 Aug 2015 12:36:00 GMT": 29 bytes.
    if b.len() != 29 || &b[3..5] != b", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    if b[19] != b':' || b[22] != b':' || &b[25..] != b" GMT" {
        return None;
    }
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let month = MONTHS.iter().position(|m| m[..] == b[8..11])? as u32 + 1;
    let secs = to_epoch(
        i64::from(digits(&b[12..16])?),
        month,
        digits(&b[5..7])?,
        digits(&b[17..19])?,
        digits(&b[20..22])?,
        digits(&b[23..25])?,
    )?;
    Some(format_amz_date(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_round_trips() {
        for s in ["19700101T000000Z", "20150830T123600Z", "20240229T235959Z", "20991231T000001Z"] {
            let secs = parse_amz_date(s).expect("valid date");
            assert_eq!(format_amz_date(secs), s);
        }
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
    }

    #[test]
    fn amz_date_rejects_garbage() {
        for s in [
            "",
            "20150830T123600",
            "20150830 123600Z",
            "20150230T000000Z",
            "20230229T000000Z",
            "20151301T000000Z",
            "20150830T243600Z",
            "2015083OT123600Z",
            "+0150830T123600Z",
        ] {
            assert_eq!(parse_amz_date(s), None, "{s}");
        }
    }

    #[test]
    fn http_date_converts() {
        assert_eq!(http_date_to_amz("Sun, 30 Aug 2015 12:36:00 GMT").as_deref(), Some("20150830T123600Z"));
        assert_eq!(http_date_to_amz("Thu, 29 Feb 2024 01:02:03 GMT").as_deref(), Some("20240229T010203Z"));
        assert_eq!(http_date_to_amz("Sun, 30 Foo 2015 12:36:00 GMT"), None);
        assert_eq!(http_date_to_amz("Sunday, 30-Aug-15 12:36:00 GMT"), None);
    }
}
