//! Embedded Metric Format: a JSON log line with an `_aws.CloudWatchMetrics` directive becomes
//! metrics, per namespace, name and dimension set (and, beyond CloudWatch, per function and
//! tenant), kept as count / sum / min / max and exposed at `/metrics` and through the API.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;

use serde_json::Value;

/// Series kept at most; records of new series beyond it are counted as dropped.
const MAX_SERIES: usize = 10_000;
/// Limits of the format: metrics per directive, dimensions per set.
const MAX_METRICS: usize = 100;
const MAX_DIMENSIONS: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub namespace: String,
    pub metric: String,
    pub unit: String,
    pub dimensions: Vec<(String, String)>,
    pub function: String,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
    }
}

#[derive(Default)]
pub struct EmfMetrics {
    series: Mutex<HashMap<SeriesKey, Stats>>,
    dropped: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metric values a record gives for one metric: a number or an array of numbers.
fn values(v: Option<&Value>) -> Vec<f64> {
    match v {
        Some(Value::Number(n)) => n.as_f64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_f64).collect(),
        _ => Vec::new(),
    }
}

fn dim_value(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl EmfMetrics {
    /// Take the metrics out of a log line, if it is an EMF record. Cheap for other lines.
    pub fn observe(&self, message: &str, function: &str, tenant: Option<&str>) -> usize {
        if !message.contains("\"_aws\"") || !message.contains("CloudWatchMetrics") {
            return 0;
        }
        let Ok(Value::Object(root)) = serde_json::from_str::<Value>(message.trim()) else { return 0 };
        let Some(directives) = root.get("_aws").and_then(|a| a.get("CloudWatchMetrics")).and_then(Value::as_array)
        else {
            return 0;
        };
        let mut found = Vec::new();
        for d in directives {
            let namespace = d.get("Namespace").and_then(Value::as_str).unwrap_or("").to_string();
            if namespace.is_empty() {
                continue;
            }
            let sets: Vec<Vec<String>> = d
                .get("Dimensions")
                .and_then(Value::as_array)
                .map(|sets| {
                    sets.iter()
                        .filter_map(Value::as_array)
                        .map(|s| s.iter().filter_map(Value::as_str).take(MAX_DIMENSIONS).map(str::to_string).collect())
                        .collect()
                })
                .unwrap_or_default();
            let sets = if sets.is_empty() { vec![Vec::new()] } else { sets };
            for m in d.get("Metrics").and_then(Value::as_array).into_iter().flatten().take(MAX_METRICS) {
                let Some(name) = m.get("Name").and_then(Value::as_str) else { continue };
                let unit = m.get("Unit").and_then(Value::as_str).unwrap_or("None").to_string();
                let vals = values(root.get(name));
                if vals.is_empty() {
                    continue;
                }
                for set in &sets {
                    // Every referenced dimension must be a root member.
                    let dims: Option<Vec<(String, String)>> =
                        set.iter().map(|k| dim_value(root.get(k)).map(|v| (k.clone(), v))).collect();
                    let Some(mut dims) = dims else { continue };
                    dims.sort();
                    let key = SeriesKey {
                        namespace: namespace.clone(),
                        metric: name.to_string(),
                        unit: unit.clone(),
                        dimensions: dims,
                        function: function.to_string(),
                        tenant: tenant.map(str::to_string),
                    };
                    found.push((key, vals.clone()));
                }
            }
        }
        let n = found.len();
        let mut all = lock(&self.series);
        for (key, vals) in found {
            if !all.contains_key(&key) && all.len() >= MAX_SERIES {
                self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let s = all.entry(key).or_default();
            for v in vals {
                s.add(v);
            }
        }
        n
    }

    /// Series matching the filters, sorted.
    pub fn query(
        &self,
        namespace: Option<&str>,
        metric: Option<&str>,
        function: Option<&str>,
        tenant: Option<&str>,
    ) -> Vec<(SeriesKey, Stats)> {
        let all = lock(&self.series);
        let mut out: Vec<(SeriesKey, Stats)> = all
            .iter()
            .filter(|(k, _)| {
                namespace.is_none_or(|n| k.namespace == n)
                    && metric.is_none_or(|m| k.metric == m)
                    && function.is_none_or(|f| k.function == f)
                    && tenant.is_none_or(|t| k.tenant.as_deref() == Some(t))
            })
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Prometheus text: `quarters_emf_sum`, `_count`, `_min`, `_max` with namespace, metric,
    /// unit, function, tenant and `dim_<name>` labels.
    pub fn render(&self) -> String {
        let series = self.query(None, None, None, None);
        let mut out = String::new();
        if series.is_empty() {
            return out;
        }
        let label = |k: &SeriesKey| {
            let mut l: BTreeMap<String, String> = BTreeMap::new();
            l.insert("namespace".into(), k.namespace.clone());
            l.insert("metric".into(), k.metric.clone());
            l.insert("unit".into(), k.unit.clone());
            l.insert("function".into(), k.function.clone());
            if let Some(t) = &k.tenant {
                l.insert("tenant".into(), t.clone());
            }
            for (d, v) in &k.dimensions {
                let name: String =
                    d.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
                l.insert(format!("dim_{name}"), v.clone());
            }
            l.iter().map(|(k, v)| format!("{k}=\"{}\"", crate::metrics::escape(v))).collect::<Vec<_>>().join(",")
        };
        // A summary without quantiles (sum and count), and the extremes as gauges.
        let _ = writeln!(
            out,
            "# HELP quarters_emf Values of metrics logged in Embedded Metric Format.\n# TYPE quarters_emf summary"
        );
        for (k, s) in &series {
            let l = label(k);
            let _ = writeln!(out, "quarters_emf_sum{{{l}}} {}\nquarters_emf_count{{{l}}} {}", s.sum, s.count);
        }
        for (name, help, pick) in [
            ("quarters_emf_min", "Smallest value of a metric logged in Embedded Metric Format.", true),
            ("quarters_emf_max", "Largest value of a metric logged in Embedded Metric Format.", false),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (k, s) in &series {
                let _ = writeln!(out, "{name}{{{}}} {}", label(k), if pick { s.min } else { s.max });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_record_becomes_a_metric() {
        let m = EmfMetrics::default();
        let rec = r#"{"_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"MyApp",
            "Dimensions":[["service","tenant_id"]],
            "Metrics":[{"Name":"Orders","Unit":"Count","StorageResolution":60}]}]},
            "service":"orders","tenant_id":"blue","Orders":1}"#
            .replace('\n', "");
        assert_eq!(m.observe(&rec, "f", Some("blue")), 1);
        assert_eq!(m.observe(&rec.replace("\"Orders\":1", "\"Orders\":[2,3]"), "f", Some("blue")), 1);
        let q = m.query(Some("MyApp"), Some("Orders"), None, Some("blue"));
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].0.dimensions, vec![("service".into(), "orders".into()), ("tenant_id".into(), "blue".into())]);
        assert_eq!((q[0].1.count, q[0].1.sum, q[0].1.min, q[0].1.max), (3, 6.0, 1.0, 3.0));
        let text = m.render();
        assert!(text.contains("quarters_emf_sum{dim_service=\"orders\",dim_tenant_id=\"blue\",function=\"f\",metric=\"Orders\",namespace=\"MyApp\",tenant=\"blue\",unit=\"Count\"} 6"), "{text}");
        // Not EMF, or missing a dimension member: nothing.
        assert_eq!(m.observe("plain", "f", None), 0);
        assert_eq!(m.observe(&rec.replace("\"service\":\"orders\",", ""), "f", None), 0);
    }
}
