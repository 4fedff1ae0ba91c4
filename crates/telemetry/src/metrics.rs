//! Invocation metrics per function and per tenant, in Prometheus' text exposition format.
//!
//! Lambda has no tenant dimension; Quarters keeps one, with a cardinality guard: per function,
//! the `top_tenants` most active tenants keep their own series and the rest are folded into
//! `tenant="__other__"` when exposed. Memory is bounded too: per function at most ten times
//! that many tenant series are held; beyond it the least recently seen tenants' series are
//! folded into one that is part of `__other__` (a tenant that comes back starts a new series).
//! Tenant ids are untrusted: label values are escaped.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms.
const BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 900.0];
/// The label of the tenants folded together by the cardinality guard.
pub const OTHER_TENANTS: &str = "__other__";

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn add(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    /// The registry's tick when the series last changed (which tenants to forget first).
    last: u64,
    invocations: u64,
    errors: u64,
    throttles: u64,
    cold_starts: u64,
    duration: Histogram,
    init: Histogram,
}

impl Series {
    fn add(&mut self, o: &Series) {
        self.invocations += o.invocations;
        self.errors += o.errors;
        self.throttles += o.throttles;
        self.cold_starts += o.cold_starts;
        self.duration.add(&o.duration);
        self.init.add(&o.init);
    }

    fn activity(&self) -> u64 {
        self.invocations + self.throttles
    }
}

/// A metric family: its name, its help, and how to read it from a series.
type Family<T> = (&'static str, &'static str, fn(&Series) -> T);
type HistogramFamily = (&'static str, &'static str, for<'a> fn(&'a Series) -> &'a Histogram);

/// How one invocation went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub error: bool,
    pub cold_start: bool,
    pub duration: Duration,
    pub init: Option<Duration>,
}

/// Live environments of one function, for the gauges.
#[derive(Debug, Clone, Default)]
pub struct EnvCounts {
    pub live: u64,
    pub busy: u64,
}

pub struct Metrics {
    series: Mutex<Registry>,
    top_tenants: usize,
    /// Tenant series held per function at most (see the module's notes).
    max_tenants: usize,
}

#[derive(Default)]
struct Registry {
    fns: HashMap<String, FunctionSeries>,
    /// Counts updates: the series' `last`.
    tick: u64,
}

#[derive(Default)]
struct FunctionSeries {
    /// tenant ("" for none) → series.
    tenants: HashMap<String, Series>,
    /// Tenants forgotten to bound memory, together.
    forgotten: Option<Series>,
}

impl FunctionSeries {
    /// Fold the least recently seen tenants into `forgotten` until `keep` are left.
    fn forget_oldest(&mut self, keep: usize) {
        let mut ages: Vec<(u64, String)> =
            self.tenants.iter().filter(|(t, _)| !t.is_empty()).map(|(t, s)| (s.last, t.clone())).collect();
        if ages.len() <= keep {
            return;
        }
        let cut = ages.len() - keep;
        ages.select_nth_unstable(cut - 1);
        for (_, t) in &ages[..cut] {
            if let Some(s) = self.tenants.remove(t) {
                self.forgotten.get_or_insert_with(Series::default).add(&s);
            }
        }
        self.tenants.shrink_to(keep + keep / 10 + 1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A label value as the text format needs it.
pub(crate) fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    pub fn new(top_tenants: usize) -> Self {
        Self::with_limit(top_tenants, top_tenants.max(100) * 10)
    }

    /// At most `max_tenants` tenant series held per function.
    pub fn with_limit(top_tenants: usize, max_tenants: usize) -> Self {
        Self { series: Mutex::new(Registry::default()), top_tenants, max_tenants: max_tenants.max(1) }
    }

    fn with(&self, function: &str, tenant: Option<&str>, f: impl FnOnce(&mut Series)) {
        let mut guard = lock(&self.series);
        let reg = &mut *guard;
        reg.tick += 1;
        let tick = reg.tick;
        let per = match reg.fns.get_mut(function) {
            Some(p) => p,
            None => reg.fns.entry(function.to_string()).or_default(),
        };
        let key = tenant.unwrap_or("");
        match per.tenants.get_mut(key) {
            Some(s) => {
                s.last = tick;
                f(s)
            }
            None => {
                // A tenant past the bound: forget the oldest tenth at once, so this runs once
                // per that many new tenants.
                if per.tenants.len() > self.max_tenants {
                    per.forget_oldest(self.max_tenants - self.max_tenants / 10);
                }
                let s = per.tenants.entry(key.to_string()).or_default();
                s.last = tick;
                f(s)
            }
        }
    }

    pub fn invoked(&self, function: &str, tenant: Option<&str>, o: Outcome) {
        self.with(function, tenant, |s| {
            s.invocations += 1;
            s.errors += u64::from(o.error);
            s.cold_starts += u64::from(o.cold_start);
            s.duration.observe(o.duration.as_secs_f64());
            if let Some(i) = o.init {
                s.init.observe(i.as_secs_f64());
            }
        });
    }

    pub fn throttled(&self, function: &str, tenant: Option<&str>) {
        self.with(function, tenant, |s| s.throttles += 1);
    }

    /// Forget a deleted function's series.
    pub fn forget(&self, function: &str) {
        lock(&self.series).fns.remove(function);
    }

    /// Series of one function after the cardinality guard: the most active tenants, then the
    /// rest folded into one.
    fn guarded(&self, f: &FunctionSeries) -> Vec<(String, Series)> {
        let per = &f.tenants;
        let mut tenants: Vec<(&String, &Series)> = per.iter().filter(|(t, _)| !t.is_empty()).collect();
        tenants.sort_by(|a, b| b.1.activity().cmp(&a.1.activity()).then_with(|| a.0.cmp(b.0)));
        let mut out: Vec<(String, Series)> = Vec::new();
        if let Some(none) = per.get("") {
            out.push((String::new(), none.clone()));
        }
        let mut other: Option<Series> = f.forgotten.clone();
        for (i, (t, s)) in tenants.into_iter().enumerate() {
            if i < self.top_tenants {
                out.push((t.clone(), s.clone()));
            } else {
                other.get_or_insert_with(Series::default).add(s);
            }
        }
        if let Some(o) = other {
            out.push((OTHER_TENANTS.to_string(), o));
        }
        out
    }

    /// How many (function, tenant) series are held (before the guard).
    pub fn series_count(&self) -> usize {
        lock(&self.series).fns.values().map(|f| f.tenants.len()).sum()
    }

    /// The exposition, with the environment gauges by function.
    pub fn render(&self, envs: &HashMap<String, EnvCounts>) -> String {
        let snapshot: Vec<(String, Vec<(String, Series)>)> = {
            let all = lock(&self.series);
            let mut v: Vec<_> = all.fns.iter().map(|(f, per)| (f.clone(), self.guarded(per))).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut out = String::new();
        let labels = |f: &str, t: &str| {
            if t.is_empty() {
                format!("function=\"{}\"", escape(f))
            } else {
                format!("function=\"{}\",tenant=\"{}\"", escape(f), escape(t))
            }
        };
        let counters: [Family<u64>; 4] = [
            ("quarters_invocations_total", "Invocations, by function and tenant.", |s| s.invocations),
            ("quarters_errors_total", "Invocations that ended in a function error.", |s| s.errors),
            ("quarters_throttles_total", "Invocations refused for concurrency (429).", |s| s.throttles),
            ("quarters_cold_starts_total", "Invocations that started a new environment.", |s| s.cold_starts),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (f, per) in &snapshot {
                for (t, s) in per {
                    let _ = writeln!(out, "{name}{{{}}} {}", labels(f, t), get(s));
                }
            }
        }
        let histograms: [HistogramFamily; 2] = [
            ("quarters_duration_seconds", "Invocation duration (the invoke phase).", |s| &s.duration),
            ("quarters_init_duration_seconds", "Init duration of new environments a caller waited for.", |s| &s.init),
        ];
        for (name, help, get) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (f, per) in &snapshot {
                for (t, s) in per {
                    let h = get(s);
                    if h.count == 0 {
                        continue;
                    }
                    let l = labels(f, t);
                    for (b, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                        let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {n}");
                    }
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
                    let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
                }
            }
        }
        let mut fns: Vec<(&String, &EnvCounts)> = envs.iter().collect();
        fns.sort_by(|a, b| a.0.cmp(b.0));
        for (name, help, get) in [
            (
                "quarters_environments",
                "Live execution environments.",
                (|e: &EnvCounts| e.live) as fn(&EnvCounts) -> u64,
            ),
            ("quarters_concurrent_executions", "Invocations running now.", |e: &EnvCounts| e.busy),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (f, e) in &fns {
                let _ = writeln!(out, "{name}{{function=\"{}\"}} {}", escape(f), get(e));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Outcome {
        Outcome { error: false, cold_start: false, duration: Duration::from_millis(ms), init: None }
    }

    #[test]
    fn per_tenant_series_and_the_guard() {
        let m = Metrics::new(2);
        for (t, n) in [("a", 5), ("b", 3), ("c", 1), ("d\"\n", 1)] {
            for _ in 0..n {
                m.invoked("f", Some(t), ok(3));
            }
        }
        m.invoked(
            "f",
            Some("a"),
            Outcome {
                error: true,
                cold_start: true,
                duration: Duration::from_millis(2),
                init: Some(Duration::from_millis(40)),
            },
        );
        m.throttled("f", Some("b"));
        let text = m.render(&HashMap::from([("f".to_string(), EnvCounts { live: 4, busy: 1 })]));
        assert!(text.contains("quarters_invocations_total{function=\"f\",tenant=\"a\"} 6"), "{text}");
        assert!(text.contains("quarters_invocations_total{function=\"f\",tenant=\"b\"} 3"));
        // c and the odd one are folded: 2 invocations.
        assert!(text.contains("quarters_invocations_total{function=\"f\",tenant=\"__other__\"} 2"));
        assert!(!text.contains("tenant=\"c\""));
        assert!(text.contains("quarters_errors_total{function=\"f\",tenant=\"a\"} 1"));
        assert!(text.contains("quarters_throttles_total{function=\"f\",tenant=\"b\"} 1"));
        assert!(text.contains("quarters_duration_seconds_bucket{function=\"f\",tenant=\"a\",le=\"0.0025\"} 1"));
        assert!(text.contains("quarters_duration_seconds_count{function=\"f\",tenant=\"a\"} 6"));
        assert!(text.contains("quarters_init_duration_seconds_count{function=\"f\",tenant=\"a\"} 1"));
        assert!(text.contains("quarters_environments{function=\"f\"} 4"));
        assert_eq!(m.series_count(), 4);
        let m = Metrics::new(10);
        m.invoked("f", Some("d\"\n"), ok(1));
        assert!(m.render(&HashMap::new()).contains("tenant=\"d\\\"\\n\""));
    }

    /// Memory stays bounded with ever new tenants: the oldest are folded into `__other__`, and
    /// no invocation is lost from the totals.
    #[test]
    fn series_are_bounded_and_totals_kept() {
        let m = Metrics::with_limit(3, 100);
        for i in 0..1000 {
            m.invoked("f", Some(&format!("t{i}")), ok(1));
            m.invoked("f", Some("steady"), ok(1));
            assert!(m.series_count() <= 101, "{} series after {i} tenants", m.series_count());
        }
        m.invoked("f", None, ok(1));
        let text = m.render(&HashMap::new());
        let total: u64 = text
            .lines()
            .filter(|l| l.starts_with("quarters_invocations_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(total, 2001, "{text}");
        assert!(text.contains("quarters_invocations_total{function=\"f\",tenant=\"steady\"} 1000"), "{text}");
        assert!(text.contains("quarters_invocations_total{function=\"f\"} 1"), "{text}");
        assert!(!text.contains("tenant=\"t0\""), "the oldest were forgotten");
    }
}
