//! The seeded click-event generator of `docs/generators.md`. Record `i` is a pure function of
//! `(seed, i)`, so instances read units of consecutive indices handed out on demand
//! (`splits`).

use super::splits::{Cursor, Dispenser};
use super::{ConnectorError, Source, TimeField};
use crate::operators::Emit;
use crate::record::{Schema, Type, Value};
use compact_str::CompactString;
use std::sync::Arc;
use strength_reduce::StrengthReducedU64;

#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `rand(seed, i, lane)` of the spec, with `mix64(seed)` precomputed as `seed_mix`.
#[inline]
pub fn rand(seed_mix: u64, i: u64, lane: u64) -> u64 {
    mix64(seed_mix ^ i.wrapping_mul(16).wrapping_add(lane))
}

#[inline]
pub fn pick(seed_mix: u64, i: u64, lane: u64, n: u64) -> u64 {
    rand(seed_mix, i, lane) % n.max(1)
}

/// `at(i)` of the spec.
#[inline]
pub fn at(start_time: i64, events_per_second: u64, i: u64) -> i64 {
    start_time + ((i as u128 * 1000) / events_per_second.max(1) as u128) as i64
}

/// `at` with its divisor fixed for a source's life: a multiplication instead of a 128-bit
/// division (a call to `__udivti3`) per record. Same values as [`at`] (tested).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start_time: i64,
    per_second: StrengthReducedU64,
}

impl Clock {
    pub fn new(start_time: i64, events_per_second: u64) -> Clock {
        Clock {
            start_time,
            per_second: StrengthReducedU64::new(events_per_second.max(1)),
        }
    }

    #[inline]
    pub fn at(&self, i: u64) -> i64 {
        match i.checked_mul(1000) {
            Some(ms) => self.start_time + (ms / self.per_second) as i64,
            None => at(self.start_time, self.per_second.get(), i),
        }
    }
}

#[inline]
pub(crate) fn prefixed(prefix: &str, n: u64) -> Value {
    let digits = n.checked_ilog10().unwrap_or(0) as usize + 1;
    let len = prefix.len() + digits;
    // Short strings are assembled on the stack with the digits written in place (inlined, a
    // constant prefix is a fixed-size copy): copying itoa's digits and the prefix, both of
    // variable length, called `memcpy` twice a record.
    if len <= 24 {
        let mut tmp = [0u8; 24];
        tmp[..prefix.len()].copy_from_slice(prefix.as_bytes());
        let mut m = n;
        for slot in tmp[prefix.len()..len].iter_mut().rev() {
            *slot = b'0' + (m % 10) as u8;
            m /= 10;
        }
        if let Ok(s) = std::str::from_utf8(&tmp[..len]) {
            return Value::Str(CompactString::new(s));
        }
    }
    let mut buf = itoa::Buffer::new();
    let mut s = CompactString::with_capacity(len);
    s.push_str(prefix);
    s.push_str(buf.format(n));
    Value::Str(s)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClickConfig {
    pub seed: u64,
    pub count: Option<u64>,
    pub keys: u64,
    pub events_per_second: u64,
    pub start_time: i64,
    pub max_disorder_ms: u64,
}

impl Default for ClickConfig {
    fn default() -> Self {
        ClickConfig {
            seed: 42,
            count: None,
            keys: 1000,
            events_per_second: 1000,
            start_time: 1_700_000_000_000,
            max_disorder_ms: 0,
        }
    }
}

impl ClickConfig {
    pub fn schema() -> Schema {
        Schema::new([
            ("id", Type::Int),
            ("user", Type::String),
            ("page", Type::String),
            ("amount", Type::Int),
            ("ts", Type::Int),
        ])
    }

    /// Record `i` in schema order.
    #[inline]
    pub fn record(&self, seed_mix: u64, i: u64) -> Vec<Value> {
        let mut row = Vec::with_capacity(5);
        self.record_projected(&ClickMath::new(self), seed_mix, i, None, &mut row);
        row
    }

    /// Record `i` with only the fields `mask` selects, in order (a narrowed source's
    /// schema): the strings are the costly part of a click, and most jobs read one of them.
    /// Appended to `out`, so a source writes straight into its batch: building a row and
    /// moving it there cost a tenth of a keyed count in copies.
    #[inline]
    pub fn record_projected(
        &self,
        math: &ClickMath,
        seed_mix: u64,
        i: u64,
        mask: Option<&[bool]>,
        out: &mut Vec<Value>,
    ) {
        let want = |k: usize| mask.is_none_or(|m| m[k]);
        if want(0) {
            out.push(Value::Int(i as i64));
        }
        if want(1) {
            out.push(prefixed("u", rand(seed_mix, i, 0) % math.keys));
        }
        if want(2) {
            out.push(math.pages[pick(seed_mix, i, 1, 50) as usize].clone());
        }
        if want(3) {
            out.push(Value::Int(pick(seed_mix, i, 2, 10000) as i64));
        }
        if want(4) {
            let d = self.max_disorder_ms;
            let ts = math.clock.at(i)
                - if d == 0 {
                    0
                } else {
                    (rand(seed_mix, i, 3) % math.disorder) as i64
                };
            out.push(Value::Int(ts));
        }
    }
}

/// A click config's divisors, fixed for a source's life, as multiplications: the key pick's
/// 64-bit division and the timestamp's 128-bit one, on every record.
pub struct ClickMath {
    clock: Clock,
    keys: StrengthReducedU64,
    disorder: StrengthReducedU64,
    /// The 50 page strings, built once: cloning an inline string copies its 24 bytes. (A
    /// table of the user strings too was no faster: for thousands of keys, loading a random
    /// entry missed the cache as often as formatting the string cost.)
    pages: Vec<Value>,
}

impl ClickMath {
    pub fn new(c: &ClickConfig) -> ClickMath {
        ClickMath {
            clock: Clock::new(c.start_time, c.events_per_second),
            keys: StrengthReducedU64::new(c.keys.max(1)),
            disorder: StrengthReducedU64::new(c.max_disorder_ms.saturating_add(1)),
            pages: (0..50).map(|p| prefixed("/p/", p)).collect(),
        }
    }
}

pub struct ClickSource {
    config: ClickConfig,
    math: ClickMath,
    seed_mix: u64,
    /// Where this instance is in the units all instances share (see `splits`).
    cursor: Cursor,
    time: TimeField,
    projection: Option<Arc<[bool]>>,
}

/// Indices per unit: about a quarter of a second of event time, so instances reading
/// neighbouring units stay well within the watermark drift bound of each other.
pub fn unit_of(events_per_second: u64) -> u64 {
    (events_per_second / 4).clamp(256, 4096)
}

impl ClickSource {
    pub fn new(
        config: ClickConfig,
        splits: Arc<Dispenser>,
        time: TimeField,
        projection: Option<Arc<[bool]>>,
    ) -> ClickSource {
        let seed_mix = mix64(config.seed);
        ClickSource {
            math: ClickMath::new(&config),
            config,
            seed_mix,
            cursor: Cursor::new(splits),
            time,
            projection,
        }
    }
}

impl Source for ClickSource {
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError> {
        let now = super::now_ms();
        let mut left = max;
        while left > 0 {
            if let Some(more) = self.cursor.refill() {
                return Ok(more);
            }
            let (from, n) = (
                self.cursor.next,
                (self.cursor.to - self.cursor.next).min(left as u64),
            );
            let (config, math) = (&self.config, &self.math);
            let (time, mask) = (self.time, self.projection.as_deref());
            let seed_mix = self.seed_mix;
            for i in from..from + n {
                out.push_with(|values| {
                    let at = values.len();
                    config.record_projected(math, seed_mix, i, mask, values);
                    time.take(values, at, now)
                });
            }
            self.cursor.next += n;
            left -= n as usize;
        }
        Ok(true)
    }

    fn barrier(&mut self, id: u64) {
        self.cursor.barrier(id);
    }

    fn position(&self) -> serde_json::Value {
        self.cursor.position()
    }

    fn resume(&mut self, _parts: &[serde_json::Value]) -> Result<(), ConnectorError> {
        // The shared dispenser resumed from them (`SourceSpec::splits`).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_numbers_read_as_formatted() {
        let mut ns = vec![0u64, 1, 9, 10, 99, 100, 12_345, u64::MAX, u64::MAX / 10];
        ns.extend((0..64).map(|b| 1u64 << b));
        for prefix in ["", "u", "/p/", "https://nexmark.example/item/"] {
            for &n in &ns {
                let want = format!("{prefix}{n}");
                assert_eq!(prefixed(prefix, n), Value::from(want.as_str()), "{want}");
            }
        }
    }

    #[test]
    fn clock_agrees_with_the_spec_formula() {
        for eps in [1u64, 3, 7, 1000, 12_345, 1_000_000, u64::MAX] {
            let clock = Clock::new(1_700_000_000_000, eps);
            let near_overflow = u64::MAX / 1000;
            for i in (0..5000u64).chain(near_overflow - 3..near_overflow + 3) {
                assert_eq!(
                    clock.at(i),
                    at(1_700_000_000_000, eps, i),
                    "eps={eps} i={i}"
                );
            }
        }
    }

    #[test]
    fn reduced_picks_agree_with_the_spec() {
        let config = ClickConfig {
            keys: 10_007,
            max_disorder_ms: 250,
            ..ClickConfig::default()
        };
        let math = ClickMath::new(&config);
        let s = mix64(config.seed);
        for i in 0..5000u64 {
            let mut row = Vec::new();
            config.record_projected(&math, s, i, None, &mut row);
            let user = format!("u{}", pick(s, i, 0, config.keys));
            assert_eq!(row[1].as_str(), Some(user.as_str()), "i={i}");
            let ts = at(config.start_time, config.events_per_second, i) - pick(s, i, 3, 251) as i64;
            assert!(matches!(row[4], Value::Int(t) if t == ts), "i={i}");
        }
    }
}
