//! Typed condition values: numbers, dates, booleans and IP ranges, parsed without allocating.

use std::net::IpAddr;

/// A number for the `Numeric*` operators: integer or decimal text.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    // Rust also accepts "inf", "NaN" and "1e5"; IAM numbers are plain decimals.
    let plain = !s.is_empty()
        && s.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || b == b'.' || (i == 0 && (b == b'-' || b == b'+')));
    if !plain {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// `true`/`false` in any case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A date for the `Date*` operators, as milliseconds since the Unix epoch. Accepts epoch seconds (digits
/// only) or ISO 8601: `YYYY-MM-DD`, optionally followed by `THH:MM[:SS[.fraction]]` and a zone (`Z`,
/// `±HH:MM`, `±HHMM` or `±HH`; no zone means UTC).
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok()?.checked_mul(1000);
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut rest = &b[10..];
    let mut seconds = 0;
    let mut millis = 0;
    let mut offset = 0;
    if let Some((&sep, time)) = rest.split_first() {
        if !matches!(sep, b'T' | b't' | b' ') || time.len() < 5 || time[2] != b':' {
            return None;
        }
        let hour = digits(time, 0, 2)?;
        let minute = digits(time, 3, 2)?;
        let mut second = 0;
        rest = &time[5..];
        if let [b':', tail @ ..] = rest {
            second = digits(tail, 0, 2)?;
            rest = &tail[2..];
            if let [b'.', tail @ ..] = rest {
                let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 {
                    return None;
                }
                // Milliseconds: the first three fractional digits.
                for (i, &c) in tail[..n.min(3)].iter().enumerate() {
                    millis += i64::from(c - b'0') * [100, 10, 1][i];
                }
                rest = &tail[n..];
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        seconds = hour * 3600 + minute * 60 + second;
        offset = match rest {
            [] | [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), zone @ ..] => {
                let (h, m) = match zone {
                    [_, _] => (digits(zone, 0, 2)?, 0),
                    [_, _, _, _] => (digits(zone, 0, 2)?, digits(zone, 2, 2)?),
                    [_, _, b':', _, _] => (digits(zone, 0, 2)?, digits(zone, 3, 2)?),
                    _ => return None,
                };
                if h > 23 || m > 59 {
                    return None;
                }
                let off = h * 3600 + m * 60;
                if *sign == b'-' { -off } else { off }
            }
            _ => return None,
        };
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + seconds - offset) * 1000 + millis)
}

fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let field = b.get(at..at + len)?;
    field.iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An IP range for `IpAddress`/`NotIpAddress`: `203.0.113.0/24`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { net: u32, len: u32 },
    V6 { net: u128, len: u32 },
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                (addr, Some(len.parse::<u32>().ok()?))
            }
            Some(_) => return None,
            None => (s, None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(ip) => {
                let len = len.unwrap_or(32);
                (len <= 32).then(|| Cidr::V4 { net: u32::from(ip) & mask32(len), len })
            }
            IpAddr::V6(ip) => {
                let len = len.unwrap_or(128);
                (len <= 128).then(|| Cidr::V6 { net: u128::from(ip) & mask128(len), len })
            }
        }
    }

    /// Whether the address text `ip` is in the range (false when it is not an address).
    pub(crate) fn contains(&self, ip: &str) -> bool {
        match (self, ip.trim().parse::<IpAddr>()) {
            (Cidr::V4 { net, len }, Ok(IpAddr::V4(ip))) => u32::from(ip) & mask32(*len) == *net,
            (Cidr::V6 { net, len }, Ok(IpAddr::V6(ip))) => u128::from(ip) & mask128(*len) == *net,
            _ => false,
        }
    }
}

fn mask32(len: u32) -> u32 {
    u32::MAX.checked_shl(32 - len).unwrap_or(0)
}

fn mask128(len: u32) -> u128 {
    u128::MAX.checked_shl(128 - len).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("0"), Some(0));
        assert_eq!(parse_date("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-14T22:13:20.5Z"), Some(1_700_000_000_500));
        assert_eq!(parse_date("2023-11-14T22:13:20.123456Z"), Some(1_700_000_000_123));
        assert_eq!(parse_date("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-14T21:13:20-0100"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-15T03:43:20+05:30"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-14T18:43:20-03:30"), Some(1_700_000_000_000));
        assert_eq!(parse_date("2023-11-14T22:13Z"), Some(1_700_000_000_000 - 20_000));
        assert_eq!(parse_date("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_date("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "",
            "yesterday",
            "2023-13-01",
            "2023-02-29",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20X",
            "2023-11-14T22:13:20.Z",
            "2023-11-14Z",
            "2023/11/14",
            "-5",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_bools() {
        assert_eq!(parse_number("42"), Some(42.0));
        assert_eq!(parse_number("-1.5"), Some(-1.5));
        assert_eq!(parse_number(" 7 "), Some(7.0));
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("1e3"), None);
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("false"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn ip_ranges() {
        let net = Cidr::parse("203.0.113.0/24").expect("cidr");
        assert!(net.contains("203.0.113.7"));
        assert!(!net.contains("203.0.114.7"));
        assert!(!net.contains("2001:db8::1"));
        assert!(!net.contains("not an ip"));
        assert!(Cidr::parse("0.0.0.0/0").expect("cidr").contains("8.8.8.8"));
        assert!(Cidr::parse("10.0.0.1").expect("host").contains("10.0.0.1"));
        assert!(!Cidr::parse("10.0.0.1").expect("host").contains("10.0.0.2"));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8:1::5"));
        assert!(!v6.contains("2001:db9::5"));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "10.0.0", "::/129"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
