//! Keyed GCRA rate limiter (the algorithm of redis-cell and `governor`).
//!
//! Pure Rust; the executable specification is
//! `tests/native/reference_ratelimit.py`.
//!
//! * Emission interval `T = period / limit`; a key may be `burst` units in
//!   debt: a fresh key can spend exactly `burst` units at once, then one unit
//!   comes back every `T`. Over any window of length `W` at most
//!   `burst + floor(W / T)` units are admitted (so `burst + limit` per period).
//! * State per key is its theoretical arrival time (TAT). A check of `cost`
//!   units at `now`: `tat = max(TAT, now)`, `new = tat + cost*T`; allowed iff
//!   `new - burst*T <= now`, in which case `TAT := new`.
//! * Time is exact integer arithmetic: nanoseconds scaled by `limit`, so
//!   that `T` is exactly `period_ns` units and nothing is lost to rounding.
//!   Clock values in float seconds become `floor(now * 1e9)` nanoseconds;
//!   the period becomes `floor(period * 1e9 + 0.5)` nanoseconds.
//! * Results: `remaining = floor((burst*T - (TAT - now)) / T)` clamped to
//!   `0..=burst`; `reset_after = TAT - now` (time until the key is full
//!   again); `retry_after = new - burst*T - now` when refused, `0.0` when
//!   allowed and `+inf` when `cost > burst` (can never be allowed).
//! * Memory: keys live in `SHARDS` mutex-protected maps; a shard holds at most
//!   `max_keys / shards` keys. Inserting into a full shard first drops its
//!   idle keys (TAT in the past: forgetting them changes nothing), and if it
//!   is still full, the 1/16 of its keys with the oldest TAT (the least in
//!   debt). Forgetting a key that is still in debt gives it a fresh
//!   allowance: that is the price of bounded memory under a flood of keys.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::errors::RateLimitFailure;

type Result<T> = std::result::Result<T, RateLimitFailure>;
type Map = HashMap<Box<str>, i128, ahash::RandomState>;

/// Upper bound on the number of shards.
pub const SHARDS: usize = 32;
/// Upper bound on `limit` and `burst` (keeps all arithmetic inside i128).
pub const MAX_UNITS: u64 = u32::MAX as u64;
/// Largest clock value / period accepted, in nanoseconds (~292 years).
pub const MAX_NANOS: u64 = i64::MAX as u64;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Units that could still be spent right now after this check.
    pub remaining: u64,
    /// Seconds until the key is back to a full burst.
    pub reset_after: f64,
    /// Seconds until this same request would be allowed; 0.0 when allowed,
    /// `f64::INFINITY` when `cost > burst`.
    pub retry_after: f64,
}

#[repr(align(128))]
struct Shard(Mutex<Map>);

pub struct RateLimiter {
    limit: u64,
    burst: u64,
    period_ns: u64,
    /// `T` in scaled units (= `period_ns`).
    interval: i128,
    /// `burst * T` in scaled units.
    burst_offset: i128,
    shards: Box<[Shard]>,
    shard_mask: usize,
    shard_capacity: usize,
    hasher: ahash::RandomState,
    /// Seconds per scaled unit denominator: `limit * 1e9`.
    units_per_second: f64,
}

/// Float seconds → whole nanoseconds, `floor(s * 1e9)`.
pub fn seconds_to_nanos(seconds: f64) -> Result<u64> {
    let ns = (seconds * 1e9).floor();
    if ns.is_finite() && ns >= 0.0 && ns < MAX_NANOS as f64 {
        Ok(ns as u64)
    } else {
        Err(RateLimitFailure::InvalidClock)
    }
}

/// Nanoseconds of the monotonic clock (`CLOCK_MONOTONIC`, the clock of
/// Python's `time.monotonic()`, so both may be mixed on one limiter).
#[cfg(unix)]
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always
    // available on the unix targets we build for.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Nanoseconds since the first call (non-unix fallback).
#[cfg(not(unix))]
pub fn monotonic_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl RateLimiter {
    /// `limit` units per `period_seconds`; `burst` defaults to `limit`.
    pub fn new(
        limit: u64,
        period_seconds: f64,
        burst: Option<u64>,
        max_keys: usize,
    ) -> Result<Self> {
        if !(1..=MAX_UNITS).contains(&limit) {
            return Err(RateLimitFailure::InvalidLimit);
        }
        let burst = burst.unwrap_or(limit);
        if !(1..=MAX_UNITS).contains(&burst) {
            return Err(RateLimitFailure::InvalidBurst);
        }
        if max_keys == 0 {
            return Err(RateLimitFailure::InvalidMaxKeys);
        }
        let period_ns = (period_seconds * 1e9 + 0.5).floor();
        if !(period_ns.is_finite() && period_ns >= 1.0 && period_ns < MAX_NANOS as f64) {
            return Err(RateLimitFailure::InvalidPeriod);
        }
        let period_ns = period_ns as u64;
        // Largest power of two <= min(SHARDS, max_keys).
        let shard_count = {
            let n = SHARDS.min(max_keys);
            1usize << (usize::BITS - 1 - n.leading_zeros())
        };
        let shards = (0..shard_count)
            .map(|_| Shard(Mutex::new(Map::default())))
            .collect();
        Ok(RateLimiter {
            limit,
            burst,
            period_ns,
            interval: i128::from(period_ns),
            burst_offset: i128::from(burst) * i128::from(period_ns),
            shards,
            shard_mask: shard_count - 1,
            shard_capacity: max_keys / shard_count,
            hasher: ahash::RandomState::new(),
            units_per_second: limit as f64 * 1e9,
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// Total number of keys the limiter may hold.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every key.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            s.0.lock().clear();
        }
    }

    fn seconds(&self, units: i128) -> f64 {
        units.max(0) as f64 / self.units_per_second
    }

    fn remaining(&self, tat: i128, now: i128) -> u64 {
        let r = (self.burst_offset - (tat - now)).div_euclid(self.interval);
        r.clamp(0, i128::from(self.burst)) as u64
    }

    /// Check (and on success spend) `cost` units of `key` at `now_ns`
    /// nanoseconds on the limiter's clock.
    pub fn check(&self, key: &str, cost: u64, now_ns: u64) -> Decision {
        let now = i128::from(now_ns) * i128::from(self.limit);
        let shard = &self.shards[self.hasher.hash_one(key) as usize & self.shard_mask];
        let mut map = shard.0.lock();
        let stored = map.get(key).copied();
        let tat = stored.map_or(now, |t| t.max(now));

        if cost > self.burst {
            return Decision {
                allowed: false,
                remaining: self.remaining(tat, now),
                reset_after: self.seconds(tat - now),
                retry_after: f64::INFINITY,
            };
        }
        let new_tat = tat + i128::from(cost) * self.interval;
        let allow_at = new_tat - self.burst_offset;
        if now < allow_at {
            return Decision {
                allowed: false,
                remaining: self.remaining(tat, now),
                reset_after: self.seconds(tat - now),
                retry_after: self.seconds(allow_at - now),
            };
        }
        if cost > 0 {
            match map.get_mut(key) {
                Some(slot) => *slot = new_tat,
                None => {
                    if map.len() >= self.shard_capacity {
                        evict(&mut map, self.shard_capacity, now);
                    }
                    map.insert(key.into(), new_tat);
                }
            }
        }
        drop(map);
        Decision {
            allowed: true,
            remaining: self.remaining(new_tat, now),
            reset_after: self.seconds(new_tat - now),
            retry_after: 0.0,
        }
    }

    /// [`check`](Self::check) with the clock in float seconds.
    pub fn check_at(&self, key: &str, cost: u64, now_seconds: f64) -> Result<Decision> {
        Ok(self.check(key, cost, seconds_to_nanos(now_seconds)?))
    }

    /// [`check`](Self::check) on the monotonic clock.
    pub fn check_now(&self, key: &str, cost: u64) -> Decision {
        self.check(key, cost, monotonic_nanos())
    }
}

/// Make room in a full shard: drop idle keys, then if needed the oldest 1/16.
fn evict(map: &mut Map, capacity: usize, now: i128) {
    map.retain(|_, tat| *tat > now);
    if map.len() < capacity {
        return;
    }
    let drop_count = (capacity / 16).max(1);
    let mut tats: Vec<i128> = map.values().copied().collect();
    let (_, &mut threshold, _) = tats.select_nth_unstable(drop_count - 1);
    let mut dropped = 0;
    map.retain(|_, tat| {
        if *tat <= threshold && dropped < drop_count {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const S: u64 = 1_000_000_000;

    #[test]
    fn fresh_key_spends_exactly_burst() {
        let rl = RateLimiter::new(10, 1.0, None, 1000).unwrap();
        for i in 0..10 {
            let d = rl.check("k", 1, 5 * S);
            assert!(d.allowed, "unit {i}");
            assert_eq!(d.remaining, 9 - i);
            assert_eq!(d.retry_after, 0.0);
        }
        let d = rl.check("k", 1, 5 * S);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert!((d.retry_after - 0.1).abs() < 1e-12);
        assert!((d.reset_after - 1.0).abs() < 1e-12);
        // One unit comes back every 100 ms.
        assert!(rl.check("k", 1, 5 * S + S / 10).allowed);
        assert!(!rl.check("k", 1, 5 * S + S / 10).allowed);
    }

    #[test]
    fn burst_separate_from_limit() {
        let rl = RateLimiter::new(1, 1.0, Some(3), 1000).unwrap();
        assert!(rl.check("k", 3, 0).allowed);
        assert!(!rl.check("k", 1, 0).allowed);
        assert!(rl.check("k", 1, S).allowed);
        let d = rl.check("other", 4, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, f64::INFINITY);
        assert_eq!(d.remaining, 3);
    }

    #[test]
    fn cost_zero_is_a_query() {
        let rl = RateLimiter::new(5, 1.0, None, 1000).unwrap();
        let d = rl.check("k", 0, S);
        assert!(d.allowed);
        assert_eq!(d.remaining, 5);
        assert!(rl.is_empty());
        rl.check("k", 2, S);
        assert_eq!(rl.check("k", 0, S).remaining, 3);
    }

    #[test]
    fn window_never_exceeds_limit_plus_burst() {
        let rl = RateLimiter::new(7, 1.0, Some(4), 1000).unwrap();
        let mut admitted = 0;
        // Hammer every millisecond for one period.
        for ms in 0..=1000u64 {
            if rl.check("k", 1, 10 * S + ms * 1_000_000).allowed {
                admitted += 1;
            }
        }
        assert!(admitted <= 7 + 4, "{admitted}");
        assert_eq!(admitted, 4 + 7);
    }

    #[test]
    fn bad_config() {
        assert!(RateLimiter::new(0, 1.0, None, 10).is_err());
        assert!(RateLimiter::new(1, 0.0, None, 10).is_err());
        assert!(RateLimiter::new(1, f64::NAN, None, 10).is_err());
        assert!(RateLimiter::new(1, -1.0, None, 10).is_err());
        assert!(RateLimiter::new(1, 1.0, Some(0), 10).is_err());
        assert!(RateLimiter::new(1, 1.0, None, 0).is_err());
        assert!(seconds_to_nanos(-1.0).is_err());
        assert!(seconds_to_nanos(f64::INFINITY).is_err());
        assert_eq!(seconds_to_nanos(1.5).unwrap(), 1_500_000_000);
    }

    #[test]
    fn memory_is_bounded() {
        let rl = RateLimiter::new(1, 60.0, None, 64).unwrap();
        assert_eq!(rl.capacity(), 64);
        for i in 0..10_000u64 {
            rl.check(&format!("key-{i}"), 1, S + i);
        }
        assert!(rl.len() <= 64, "{}", rl.len());
        // One shard of one key: an idle key is dropped to make room...
        let rl = RateLimiter::new(1, 1.0, None, 1).unwrap();
        assert!(rl.check("a", 1, 0).allowed);
        assert!(rl.check("b", 1, 100 * S).allowed);
        assert_eq!(rl.len(), 1);
        // ...and when none is idle, the oldest goes (and "b" starts afresh).
        assert!(rl.check("a", 1, 100 * S).allowed);
        assert_eq!(rl.len(), 1);
        assert!(rl.check("b", 1, 100 * S).allowed);
        rl.clear();
        assert!(rl.is_empty());
    }

    #[test]
    fn concurrent_callers_never_exceed_allowance() {
        let rl = Arc::new(RateLimiter::new(100, 1.0, Some(20), 1000).unwrap());
        let admitted = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(AtomicU64::new(S));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (rl, admitted, clock) = (rl.clone(), admitted.clone(), clock.clone());
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        // The shared clock advances 0.1 ms per call: 2 s total.
                        let now = clock.fetch_add(100_000, Ordering::SeqCst);
                        if rl.check("shared", 1, now).allowed {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let elapsed_ns = clock.load(Ordering::SeqCst) - S;
        // burst + one unit per 10 ms of elapsed time.
        let bound = 20 + elapsed_ns / 10_000_000;
        let got = admitted.load(Ordering::SeqCst);
        assert!(got <= bound, "{got} > {bound}");
        assert!(got >= bound / 2, "{got} too low vs {bound}");
    }

    #[test]
    fn monotonic_clock_moves() {
        let a = monotonic_nanos();
        let b = monotonic_nanos();
        assert!(b >= a);
        let rl = RateLimiter::new(1, 3600.0, None, 10).unwrap();
        assert!(rl.check_now("k", 1).allowed);
        assert!(!rl.check_now("k", 1).allowed);
        assert!(rl.check_at("j", 1, 12.5).unwrap().allowed);
    }
}
