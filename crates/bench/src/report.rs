//! The results table: rows of figures, their baselines, ratios and the targets they are checked
//! against.

use serde_json::{Value, json};

use crate::stats::round2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
    PerSec,
    Percent,
    Mib,
    /// A number of things (environments, processes).
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Micros => "us",
            Unit::Millis => "ms",
            Unit::PerSec => "per_s",
            Unit::Percent => "percent",
            Unit::Mib => "mib",
            Unit::Count => "count",
        }
    }

    /// A value of this unit for the table.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Micros if v.abs() < 100.0 => format!("{v:.1} µs"),
            Unit::Micros => format!("{v:.0} µs"),
            Unit::Millis => format!("{v:.2} ms"),
            Unit::PerSec => format!("{v:.0}/s"),
            Unit::Percent => format!("{v:.2}%"),
            Unit::Mib => format!("{v:.2} MiB"),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

/// What a figure should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    pub fn format(self, unit: Unit) -> String {
        match self {
            Target::AtMost(t) => format!("<= {}", unit.format(t)),
            Target::AtLeast(t) => format!(">= {}", unit.format(t)),
        }
    }

    /// How far `value` falls short of the target (0 when met).
    pub fn shortfall(self, value: f64) -> f64 {
        match self {
            Target::AtMost(t) => (value - t).max(0.0),
            Target::AtLeast(t) => (t - value).max(0.0),
        }
    }

    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(t) => value <= t,
            Target::AtLeast(t) => value >= t,
        }
    }
}

/// `ok`, or `MISSED by <shortfall> (<percent of target>)`.
pub fn verdict(value: f64, target: Target, unit: Unit) -> String {
    if target.met(value) {
        return "ok".to_string();
    }
    let by = target.shortfall(value);
    let t = match target {
        Target::AtMost(t) | Target::AtLeast(t) => t,
    };
    if t.abs() > f64::EPSILON {
        format!("MISSED by {} ({:.0}%)", unit.format(by), 100.0 * by / t.abs())
    } else {
        format!("MISSED by {}", unit.format(by))
    }
}

/// `value / baseline`, when both make sense.
pub fn ratio(value: f64, baseline: Option<f64>) -> Option<f64> {
    baseline.filter(|b| *b > 0.0 && b.is_finite()).map(|b| value / b)
}

pub fn format_ratio(r: f64) -> String {
    if r >= 10.0 { format!("{r:.1}x") } else { format!("{r:.2}x") }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: Unit,
    pub value: f64,
    /// What the same figure is for the baseline (a bare HTTP echo, or warm invokes for cold
    /// starts), measured in the same run.
    pub baseline: Option<f64>,
    pub baseline_name: Option<&'static str>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(name: impl Into<String>, unit: Unit, value: f64) -> Self {
        Row { name: name.into(), unit, value, baseline: None, baseline_name: None, target: None }
    }

    pub fn baseline(mut self, of: &'static str, value: f64) -> Self {
        self.baseline = Some(value);
        self.baseline_name = Some(of);
        self
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| t.met(self.value))
    }

    fn cells(&self) -> [String; 6] {
        let dash = || "-".to_string();
        [
            self.name.clone(),
            self.unit.format(self.value),
            match (self.baseline, self.baseline_name) {
                (Some(b), Some(n)) => format!("{} ({n})", self.unit.format(b)),
                (Some(b), None) => self.unit.format(b),
                _ => dash(),
            },
            ratio(self.value, self.baseline).map(format_ratio).unwrap_or_else(dash),
            self.target.map(|t| t.format(self.unit)).unwrap_or_else(dash),
            self.target.map(|t| verdict(self.value, t, self.unit)).unwrap_or_else(dash),
        ]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "unit": self.unit.as_str(),
            "value": round2(self.value),
            "baseline": self.baseline.map(round2),
            "baseline_of": self.baseline_name,
            "ratio": ratio(self.value, self.baseline).map(|r| (r * 1000.0).round() / 1000.0),
            "target": self.target.map(|t| match t {
                Target::AtMost(v) => json!({ "at_most": v }),
                Target::AtLeast(v) => json!({ "at_least": v }),
            }),
            "met": self.met(),
        })
    }
}

/// The rows as an aligned text table: text columns left-aligned, figures right-aligned.
pub fn format_table(rows: &[Row]) -> String {
    const HEADER: [&str; 6] = ["metric", "value", "baseline", "ratio", "target", "result"];
    const RIGHT: [bool; 6] = [false, true, true, true, true, false];
    let cells: Vec<[String; 6]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut out = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(c.chars().count());
            if RIGHT[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cols.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(HEADER);
    out.push('\n');
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in &cells {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_both_ways() {
        assert!(Target::AtMost(1000.0).met(999.0));
        assert!(Target::AtMost(1000.0).met(1000.0));
        assert!(!Target::AtMost(1000.0).met(1000.5));
        assert!(Target::AtLeast(5000.0).met(5000.0));
        assert!(!Target::AtLeast(5000.0).met(4999.0));
        assert_eq!(Target::AtMost(25.0).shortfall(20.0), 0.0);
        assert_eq!(Target::AtLeast(5000.0).shortfall(4000.0), 1000.0);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(800.0, Target::AtMost(1000.0), Unit::Micros), "ok");
        assert_eq!(verdict(1500.0, Target::AtMost(1000.0), Unit::Micros), "MISSED by 500 µs (50%)");
        assert_eq!(verdict(4000.0, Target::AtLeast(5000.0), Unit::PerSec), "MISSED by 1000/s (20%)");
        assert_eq!(verdict(30.0, Target::AtMost(25.0), Unit::Millis), "MISSED by 5.00 ms (20%)");
        assert_eq!(verdict(1.0, Target::AtMost(0.0), Unit::Percent), "MISSED by 1.00%");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(10.0, Some(2.0)), Some(5.0));
        assert_eq!(ratio(10.0, Some(0.0)), None);
        assert_eq!(ratio(10.0, None), None);
        assert_eq!(format_ratio(12.345), "12.3x");
        assert_eq!(format_ratio(0.256), "0.26x");
    }

    #[test]
    fn units_format() {
        assert_eq!(Unit::Micros.format(42.25), "42.2 µs");
        assert_eq!(Unit::Micros.format(1234.4), "1234 µs");
        assert_eq!(Unit::Millis.format(12.3456), "12.35 ms");
        assert_eq!(Unit::PerSec.format(5123.6), "5124/s");
        assert_eq!(Unit::Percent.format(0.5), "0.50%");
        assert_eq!(Unit::Mib.format(1.234), "1.23 MiB");
        assert_eq!(Unit::Count.format(16.0), "16");
        assert_eq!(verdict(17.0, Target::AtMost(16.0), Unit::Count), "MISSED by 1 (6%)");
        assert_eq!(verdict(2.5, Target::AtMost(2.0), Unit::Mib), "MISSED by 0.50 MiB (25%)");
    }

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            Row::new("warm invoke p50", Unit::Micros, 850.0).baseline("echo", 50.0).target(Target::AtMost(1000.0)),
            Row::new("cold start p99", Unit::Millis, 40.0),
        ];
        let t = format_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("metric"));
        assert!(lines[1].chars().all(|c| c == '-'));
        assert!(lines[2].contains("850 µs"));
        assert!(lines[2].contains("50.0 µs (echo)"));
        assert!(lines[2].contains("17.0x"));
        assert!(lines[2].ends_with("ok"));
        assert!(lines[3].ends_with('-'));
        // Right-aligned figures end in the same column.
        let end_of =
            |line: &str, needle: &str| line.find(needle).map(|i| line[..i].chars().count() + needle.chars().count());
        assert_eq!(end_of(lines[2], "850 µs"), end_of(lines[3], "40.00 ms"));
    }

    #[test]
    fn row_json() {
        let r = Row::new("throughput", Unit::PerSec, 4000.0).baseline("echo", 20000.0).target(Target::AtLeast(5000.0));
        let v = r.to_json();
        assert_eq!(v["met"], json!(false));
        assert_eq!(v["ratio"], json!(0.2));
        assert_eq!(v["target"]["at_least"], json!(5000.0));
        assert_eq!(v["baseline_of"], json!("echo"));
    }
}
