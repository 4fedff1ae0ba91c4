//! Usage-plan throttling (token buckets) and quota periods.
//!
//! Rate limits follow AWS's `rateLimit`/`burstLimit`: a bucket refills at `rate` tokens per second up to a
//! capacity of `burst`, and each request takes one token. Choices:
//! - A negative or NaN rate is treated as 0. A rate of 0 never refills: with burst 0 nothing is allowed, with
//!   burst N only the initial N requests are.
//! - Burst 0 with a positive rate means "no bursting": the capacity is 1, so requests are spaced `1/rate`
//!   apart.
//!
//! Quota periods are computed in UTC from epoch milliseconds with civil-date arithmetic (no time crate):
//! - `DAY`: midnight to midnight UTC; the offset is ignored (AWS requires 0 for `DAY`).
//! - `WEEK`: weeks start on Monday 00:00 UTC; `offset` shifts the start by that many days (`offset % 7`:
//!   1 = Tuesday, ..., 6 = Sunday). Note: older AWS SDK documentation describes the week offset as
//!   0 = Sunday, 1 = Monday, and the current API reference describes `offset` as a number of requests
//!   subtracted in the first period; this module uses the Monday-based day offset.
//! - `MONTH`: calendar months in UTC; the period starts on day `1 + offset` of the month, clamped to the
//!   month's last day (offset 30 starts on the 31st, or the 30th/28th/29th in shorter months).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Slack for floating-point refill error, so e.g. 10 × 0.1 s at 1/s counts as a full token.
const EPSILON: f64 = 1e-9;

/// A token bucket: `rate` tokens per second refill, capacity `burst` (AWS: rateLimit, burstLimit).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Refill rate in tokens per second, sanitized (finite or +inf, never negative or NaN).
    rate: f64,
    /// The burst as configured (before `max(burst, 1)`), to detect reconfiguration.
    burst: u32,
    /// Maximum tokens.
    capacity: f64,
    /// Current tokens as of `last`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

fn sanitize_rate(rate: f64) -> f64 {
    if rate > 0.0 { rate } else { 0.0 }
}

fn capacity_for(rate: f64, burst: u32) -> f64 {
    if rate > 0.0 { f64::from(burst.max(1)) } else { f64::from(burst) }
}

impl TokenBucket {
    /// A full bucket refilling at `rate`/s with capacity `burst` (see the module docs for 0 and negatives).
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let rate = sanitize_rate(rate);
        let capacity = capacity_for(rate, burst);
        Self { rate, burst, capacity, tokens: capacity, last: now }
    }

    /// Takes one token for a request at `now`; false when the request should be throttled (HTTP 429).
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Changes rate and burst, keeping the tokens accumulated so far (clamped to the new capacity).
    pub fn reconfigure(&mut self, rate: f64, burst: u32, now: Instant) {
        self.refill(now);
        self.rate = sanitize_rate(rate);
        self.burst = burst;
        self.capacity = capacity_for(self.rate, burst);
        self.tokens = self.tokens.min(self.capacity);
    }

    /// The tokens available at `now` (fractional).
    pub fn available(&self, now: Instant) -> f64 {
        let mut copy = self.clone();
        copy.refill(now);
        copy.tokens
    }

    fn is_configured_as(&self, rate: f64, burst: u32) -> bool {
        self.rate == sanitize_rate(rate) && self.burst == burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed > Duration::ZERO {
            self.last = now;
            if self.tokens < self.capacity {
                self.tokens = (self.tokens + self.rate * elapsed.as_secs_f64()).min(self.capacity);
            }
        }
    }

    /// When the bucket became (or will become) full; `None` if it never refills to full.
    fn full_since(&self) -> Option<Instant> {
        if self.tokens >= self.capacity {
            return Some(self.last);
        }
        if self.rate <= 0.0 {
            return None;
        }
        let secs = (self.capacity - self.tokens) / self.rate;
        self.last.checked_add(Duration::try_from_secs_f64(secs).ok()?)
    }
}

const SHARDS: usize = 16;

/// Many buckets by key (e.g. (api key id, plan id, method key)), shared across threads.
///
/// Buckets are spread over 16 independently locked shards to keep contention low.
pub struct Limiter<K> {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<K, TokenBucket>>]>,
}

impl<K: Eq + Hash + Clone> Default for Limiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> std::fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// An empty limiter.
    pub fn new() -> Self {
        Self { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, TokenBucket>> {
        // Use the high bits: each shard's map hashes with its own seed, so this does not skew it.
        let index = (self.hasher.hash_one(key) >> 32) as usize % self.shards.len();
        // A panic while holding the lock cannot leave a bucket in an unusable state.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<K, TokenBucket>>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes one token from the bucket of `key`, creating it with (rate, burst) if missing; if (rate, burst)
    /// changed since creation, the bucket is reconfigured (keeping its current tokens clamped to the new burst).
    pub fn check(&self, key: &K, rate: f64, burst: u32, now: Instant) -> bool {
        let mut shard = self.shard(key);
        if let Some(bucket) = shard.get_mut(key) {
            if !bucket.is_configured_as(rate, burst) {
                bucket.reconfigure(rate, burst, now);
            }
            return bucket.try_take(now);
        }
        let mut bucket = TokenBucket::new(rate, burst, now);
        let allowed = bucket.try_take(now);
        shard.insert(key.clone(), bucket);
        allowed
    }

    /// Drop buckets that have been full (idle) for longer than `idle`, to bound memory.
    ///
    /// A dropped bucket is recreated full, so this never grants more than keeping it would. Buckets with a
    /// rate of 0 that are not full never refill and are kept.
    pub fn retain_recent(&self, idle: Duration, now: Instant) {
        for mut shard in self.shards() {
            shard.retain(|_, b| b.full_since().is_none_or(|t| now.saturating_duration_since(t) <= idle));
        }
    }

    /// The number of buckets.
    pub fn len(&self) -> usize {
        self.shards().map(|s| s.len()).sum()
    }

    /// Whether there are no buckets.
    pub fn is_empty(&self) -> bool {
        self.shards().all(|s| s.is_empty())
    }
}

/// Usage-plan quota periods (AWS: quota {limit, offset, period: DAY|WEEK|MONTH}).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Period {
    /// A UTC day.
    Day,
    /// A week starting Monday 00:00 UTC (shifted by the offset).
    Week,
    /// A UTC calendar month (starting on day `1 + offset`).
    Month,
}

const DAY_MS: u64 = 86_400_000;

/// The start (epoch ms, UTC) of the period containing `now_ms`; `offset` is AWS's quota offset (days into the
/// week/month, ignored for DAY). Weeks start on Monday; see the module docs for offsets.
pub fn period_start(period: Period, offset: u32, now_ms: u64) -> u64 {
    period_bounds(period, offset, now_ms).0
}

/// The end of that period (exclusive), epoch ms.
pub fn period_end(period: Period, offset: u32, now_ms: u64) -> u64 {
    period_bounds(period, offset, now_ms).1
}

/// `(period_start, period_end)` of the period containing `now_ms`.
pub fn period_bounds(period: Period, offset: u32, now_ms: u64) -> (u64, u64) {
    // Fits: u64::MAX / DAY_MS < 2^38.
    let day = (now_ms / DAY_MS) as i64;
    let (start, end) = match period {
        Period::Day => (day, day + 1),
        Period::Week => {
            // 1970-01-01 was a Thursday: Monday-based weekday of day 0 is 3.
            let since_start = (day + 3 - i64::from(offset % 7)).rem_euclid(7);
            (day - since_start, day - since_start + 7)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            let this = month_start(y, m, offset);
            if day >= this {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (this, month_start(ny, nm, offset))
            } else {
                let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
                (month_start(py, pm, offset), this)
            }
        }
    };
    (days_to_ms(start), days_to_ms(end))
}

/// Day number of the period start within month `m` of year `y`: day `1 + offset`, clamped to the month.
fn month_start(y: i64, m: u32, offset: u32) -> i64 {
    let d = offset.saturating_add(1).min(days_in_month(y, m));
    days_from_civil(y, m, d)
}

/// Epoch ms of a day number, clamped to the `u64` range.
fn days_to_ms(days: i64) -> u64 {
    u64::try_from(i128::from(days) * i128::from(DAY_MS)).unwrap_or(if days < 0 { 0 } else { u64::MAX })
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

use quarters_types::time::{civil as civil_from_days, days_from_civil};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn bucket_starts_full_drains_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5, t0);
        for i in 0..5 {
            assert!(b.try_take(t0), "take {i}");
        }
        assert!(!b.try_take(t0));
        // 10/s: one token per 100 ms.
        assert!(!b.try_take(t0 + secs(0.05)));
        assert!(b.try_take(t0 + secs(0.1)));
        assert!(!b.try_take(t0 + secs(0.1)));
        // Ten 100 ms steps accumulate exactly despite float rounding.
        let mut b = TokenBucket::new(1.0, 1, t0);
        assert!(b.try_take(t0));
        for i in 1..10 {
            assert!(!b.try_take(t0 + secs(0.1 * f64::from(i))));
        }
        assert!(b.try_take(t0 + secs(1.0)));
        // Refill caps at burst.
        let mut b = TokenBucket::new(10.0, 3, t0);
        assert!(b.try_take(t0));
        let later = t0 + Duration::from_secs(60);
        assert!((b.available(later) - 3.0).abs() < 1e-12);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn fractional_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.5, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 + secs(1.0)));
        assert!(!b.try_take(t0 + secs(1.9)));
        assert!(b.try_take(t0 + secs(2.0)));
        assert!(!b.try_take(t0 + secs(3.0)));
        assert!(b.try_take(t0 + secs(4.0)));
    }

    #[test]
    fn zero_negative_and_nan_rates() {
        let t0 = Instant::now();
        let mut none = TokenBucket::new(0.0, 0, t0);
        assert!(!none.try_take(t0));
        assert!(!none.try_take(t0 + Duration::from_secs(3600)));
        for rate in [-5.0, f64::NAN, 0.0] {
            let mut b = TokenBucket::new(rate, 2, t0);
            assert!(b.try_take(t0));
            assert!(b.try_take(t0));
            assert!(!b.try_take(t0 + Duration::from_secs(3600)), "rate {rate}");
        }
        // Burst 0 with a positive rate: capacity 1, no bursting.
        let mut b = TokenBucket::new(2.0, 0, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + secs(0.5)));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(1.0, 1, t1);
        assert!(b.try_take(t1));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn limiter_keys_are_independent() {
        let t0 = Instant::now();
        let limiter: Limiter<(String, u32)> = Limiter::new();
        let a = ("key-a".to_owned(), 1);
        let b = ("key-b".to_owned(), 1);
        assert!(limiter.is_empty());
        assert!(limiter.check(&a, 1.0, 2, t0));
        assert!(limiter.check(&a, 1.0, 2, t0));
        assert!(!limiter.check(&a, 1.0, 2, t0));
        assert!(limiter.check(&b, 1.0, 2, t0));
        assert!(limiter.check(&b, 1.0, 2, t0));
        assert!(!limiter.check(&b, 1.0, 2, t0));
        assert_eq!(limiter.len(), 2);
        for i in 0..100u32 {
            assert!(limiter.check(&(format!("k{i}"), i), 1.0, 1, t0));
        }
        assert_eq!(limiter.len(), 102);
    }

    #[test]
    fn limiter_reconfigures() {
        let t0 = Instant::now();
        let limiter: Limiter<&str> = Limiter::new();
        assert!(limiter.check(&"k", 1.0, 10, t0)); // 9 left
        // Shrinking the burst clamps the tokens.
        assert_eq!((0..10).filter(|_| limiter.check(&"k", 1.0, 3, t0)).count(), 3);
        // Growing it keeps the (empty) tokens; the new rate applies from now.
        assert!(!limiter.check(&"k", 100.0, 50, t0));
        assert_eq!((0..100).filter(|_| limiter.check(&"k", 100.0, 50, t0 + secs(0.1))).count(), 10);
        // To rate 0 with burst 0: nothing more.
        assert!(!limiter.check(&"k", 0.0, 0, t0 + Duration::from_secs(100)));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn retain_recent_drops_idle_full_buckets() {
        let t0 = Instant::now();
        let limiter: Limiter<u32> = Limiter::new();
        assert!(limiter.check(&1, 1.0, 1, t0)); // idle: full again at t0 + 1 s
        assert!(limiter.check(&2, 1.0, 5, t0)); // idle: full again at t0 + 1 s
        assert!(limiter.check(&3, 0.0, 1, t0)); // rate 0: never full again, kept
        assert!(!limiter.check(&4, 0.0, 0, t0)); // capacity 0: always full
        for i in 0..=60 {
            // Busy: drained every second.
            let now = t0 + Duration::from_secs(i);
            assert!(limiter.check(&5, 1.0, 1, now));
        }
        let now = t0 + Duration::from_secs(60);
        limiter.retain_recent(Duration::from_secs(30), now);
        let mut left: Vec<u32> = (1..=5).filter(|k| limiter.shard(k).contains_key(k)).collect();
        left.sort_unstable();
        assert_eq!(left, vec![3, 5]);
        // Not yet idle long enough: kept.
        assert!(limiter.check(&6, 1.0, 1, now));
        limiter.retain_recent(Duration::from_secs(30), now + Duration::from_secs(30));
        assert_eq!(limiter.len(), 3);
        limiter.retain_recent(Duration::from_secs(30), now + Duration::from_secs(32));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn concurrent_takes_at_one_instant_respect_burst() {
        let limiter: Arc<Limiter<&'static str>> = Arc::new(Limiter::new());
        let now = Instant::now();
        let granted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, granted) = (Arc::clone(&limiter), Arc::clone(&granted));
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if limiter.check(&"shared", 50.0, 25, now) {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread panicked");
        }
        assert_eq!(granted.load(Ordering::Relaxed), 25);
    }

    #[test]
    fn concurrent_takes_never_exceed_burst_plus_rate() {
        let (rate, burst) = (200.0, 20);
        let limiter: Arc<Limiter<String>> = Arc::new(Limiter::new());
        let start = Instant::now();
        let granted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limiter, granted) = (Arc::clone(&limiter), Arc::clone(&granted));
                std::thread::spawn(move || {
                    let key = "plan/key/GET /orders".to_owned();
                    while start.elapsed() < Duration::from_millis(250) {
                        if limiter.check(&key, rate, burst, Instant::now()) {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread panicked");
        }
        let elapsed = start.elapsed().as_secs_f64();
        let granted = granted.load(Ordering::Relaxed) as f64;
        assert!(granted <= f64::from(burst) + rate * elapsed + 1e-6, "granted {granted} in {elapsed}s");
        assert!(granted >= f64::from(burst), "granted {granted}");
    }

    /// Epoch ms of a UTC date-time.
    fn utc(y: i64, m: u32, d: u32, h: u64, min: u64) -> u64 {
        u64::try_from(days_from_civil(y, m, d)).expect("after 1970") * DAY_MS + h * 3_600_000 + min * 60_000
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(utc(2026, 2, 15, 0, 0), 1_771_113_600_000);
    }

    #[test]
    fn day_periods() {
        let now = utc(2026, 2, 15, 13, 45) + 123;
        assert_eq!(period_start(Period::Day, 0, now), utc(2026, 2, 15, 0, 0));
        assert_eq!(period_end(Period::Day, 0, now), utc(2026, 2, 16, 0, 0));
        assert_eq!(period_start(Period::Day, 3, now), utc(2026, 2, 15, 0, 0));
        let midnight = utc(2026, 2, 16, 0, 0);
        assert_eq!(period_bounds(Period::Day, 0, midnight), (midnight, utc(2026, 2, 17, 0, 0)));
        assert_eq!(period_bounds(Period::Day, 0, midnight - 1), (utc(2026, 2, 15, 0, 0), midnight));
    }

    #[test]
    fn week_periods() {
        // 2026-02-18 is a Wednesday; its Monday is 2026-02-16.
        let wed = utc(2026, 2, 18, 9, 30);
        assert_eq!(period_start(Period::Week, 0, wed), utc(2026, 2, 16, 0, 0));
        assert_eq!(period_end(Period::Week, 0, wed), utc(2026, 2, 23, 0, 0));
        // Monday 00:00 starts a week; Sunday 23:59 ends one.
        let mon = utc(2026, 2, 16, 0, 0);
        assert_eq!(period_start(Period::Week, 0, mon), mon);
        assert_eq!(period_start(Period::Week, 0, mon - 1), utc(2026, 2, 9, 0, 0));
        // Offset 1: weeks start on Tuesday; Wednesday's is the day before, Monday's the previous Tuesday.
        assert_eq!(period_start(Period::Week, 1, wed), utc(2026, 2, 17, 0, 0));
        assert_eq!(period_end(Period::Week, 1, wed), utc(2026, 2, 24, 0, 0));
        assert_eq!(period_start(Period::Week, 1, mon), utc(2026, 2, 10, 0, 0));
        // Offset 6: Sunday; offsets wrap modulo 7.
        assert_eq!(period_start(Period::Week, 6, wed), utc(2026, 2, 15, 0, 0));
        assert_eq!(period_start(Period::Week, 7, wed), utc(2026, 2, 16, 0, 0));
        // Across a month and year boundary: Thursday 2026-01-01 → Monday 2025-12-29.
        assert_eq!(period_start(Period::Week, 0, utc(2026, 1, 1, 12, 0)), utc(2025, 12, 29, 0, 0));
        // Near the epoch (a Thursday): clamped at 0.
        assert_eq!(period_start(Period::Week, 0, 1000), 0);
        assert_eq!(period_end(Period::Week, 0, 1000), utc(1970, 1, 5, 0, 0));
    }

    #[test]
    fn month_periods() {
        let mid_feb = utc(2026, 2, 15, 8, 0);
        assert_eq!(period_start(Period::Month, 0, mid_feb), utc(2026, 2, 1, 0, 0));
        assert_eq!(period_end(Period::Month, 0, mid_feb), utc(2026, 3, 1, 0, 0));
        let dec = utc(2026, 12, 31, 23, 59);
        assert_eq!(period_bounds(Period::Month, 0, dec), (utc(2026, 12, 1, 0, 0), utc(2027, 1, 1, 0, 0)));
        // Leap February.
        assert_eq!(period_end(Period::Month, 0, utc(2028, 2, 29, 0, 0)), utc(2028, 3, 1, 0, 0));
        // Offset 14: months start on the 15th.
        assert_eq!(period_bounds(Period::Month, 14, mid_feb), (utc(2026, 2, 15, 0, 0), utc(2026, 3, 15, 0, 0)));
        let feb_10 = utc(2026, 2, 10, 0, 0);
        assert_eq!(period_bounds(Period::Month, 14, feb_10), (utc(2026, 1, 15, 0, 0), utc(2026, 2, 15, 0, 0)));
        let jan_3 = utc(2026, 1, 3, 0, 0);
        assert_eq!(period_bounds(Period::Month, 14, jan_3), (utc(2025, 12, 15, 0, 0), utc(2026, 1, 15, 0, 0)));
        let dec_20 = utc(2026, 12, 20, 0, 0);
        assert_eq!(period_bounds(Period::Month, 14, dec_20), (utc(2026, 12, 15, 0, 0), utc(2027, 1, 15, 0, 0)));
        // Offset 30 (the 31st) clamps to short months' last day.
        assert_eq!(period_bounds(Period::Month, 30, mid_feb), (utc(2026, 1, 31, 0, 0), utc(2026, 2, 28, 0, 0)));
        let mar_5 = utc(2026, 3, 5, 0, 0);
        assert_eq!(period_bounds(Period::Month, 30, mar_5), (utc(2026, 2, 28, 0, 0), utc(2026, 3, 31, 0, 0)));
        let apr_30 = utc(2026, 4, 30, 1, 0);
        assert_eq!(period_bounds(Period::Month, 30, apr_30), (utc(2026, 4, 30, 0, 0), utc(2026, 5, 31, 0, 0)));
        assert_eq!(period_start(Period::Month, u32::MAX, mid_feb), utc(2026, 1, 31, 0, 0));
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        for p in [Period::Day, Period::Week, Period::Month] {
            for offset in [0, 6, 30] {
                for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                    let (s, e) = period_bounds(p, offset, now);
                    assert!(s <= now && (now < e || e == u64::MAX), "{p:?} {offset} {now}: {s}..{e}");
                }
            }
        }
    }

    #[test]
    fn period_serde() {
        assert_eq!(serde_json::to_string(&Period::Week).expect("serialize"), r#""WEEK""#);
        assert_eq!(serde_json::from_str::<Period>(r#""MONTH""#).expect("deserialize"), Period::Month);
    }
}
