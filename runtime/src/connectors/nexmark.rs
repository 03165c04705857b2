//! The Nexmark benchmark's Person / Auction / Bid events (`docs/generators.md`), 1:3:46.
//! A source emits one kind; the others' indices are skipped without being generated.

use super::generator::{Clock, mix64, pick, prefixed};
use super::splits::{Cursor, Dispenser};
use super::{ConnectorError, Source, TimeField};
use crate::operators::Emit;
use crate::record::{Schema, Type, Value};
use compact_str::CompactString;
use std::sync::Arc;

const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const FIRST: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Auction,
    Bid,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "person" => Kind::Person,
            "auction" => Kind::Auction,
            "bid" => Kind::Bid,
            _ => return None,
        })
    }

    fn of(i: u64) -> Kind {
        match i % 50 {
            0 => Kind::Person,
            1..=3 => Kind::Auction,
            _ => Kind::Bid,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    pub kind: Kind,
    pub seed: u64,
    pub count: Option<u64>,
    pub events_per_second: u64,
    pub start_time: i64,
}

impl NexmarkConfig {
    pub fn new(kind: Kind) -> NexmarkConfig {
        NexmarkConfig {
            kind,
            seed: 42,
            count: None,
            events_per_second: 10_000,
            start_time: 1_700_000_000_000,
        }
    }

    pub fn schema(kind: Kind) -> Schema {
        use Type::*;
        match kind {
            Kind::Person => Schema::new([
                ("id", Int),
                ("name", String),
                ("emailAddress", String),
                ("creditCard", String),
                ("city", String),
                ("state", String),
                ("dateTime", Int),
            ]),
            Kind::Auction => Schema::new([
                ("id", Int),
                ("itemName", String),
                ("initialBid", Int),
                ("reserve", Int),
                ("seller", Int),
                ("category", Int),
                ("dateTime", Int),
                ("expires", Int),
            ]),
            Kind::Bid => Schema::new([
                ("auction", Int),
                ("bidder", Int),
                ("price", Int),
                ("channel", String),
                ("url", String),
                ("dateTime", Int),
            ]),
        }
    }

    /// Event `i` (which must be of this config's kind), in schema order.
    pub fn record(&self, s: u64, i: u64, row: &mut Vec<Value>) {
        let clock = Clock::new(self.start_time, self.events_per_second);
        self.record_projected(&clock, s, i, row, None)
    }

    /// Event `i` with only the fields `mask` selects, in order (a narrowed source's schema).
    /// `clock` is this config's (see [`Clock`]).
    pub fn record_projected(
        &self,
        clock: &Clock,
        s: u64,
        i: u64,
        row: &mut Vec<Value>,
        mask: Option<&[bool]>,
    ) {
        let want = |k: usize| mask.is_none_or(|m| m[k]);
        let epoch = i / 50;
        let off = i % 50;
        let t = clock.at(i);
        let int = |v: u64| Value::Int(v as i64);
        let st = |v: &str| Value::Str(CompactString::from(v));
        // Field by field, built only when wanted: building the row as an array and moving it
        // into `row` cost a sixth of q5 in copies.
        let mut put = |k: usize, v: &dyn Fn() -> Value| {
            if want(k) {
                row.push(v());
            }
        };
        match self.kind {
            Kind::Person => {
                let id = 1000 + epoch;
                let card = 1000 + pick(s, i, 2, 9000);
                put(0, &|| int(id));
                put(1, &|| {
                    Value::Str(compact_str::format_compact!(
                        "{} {}",
                        FIRST[pick(s, i, 0, 11) as usize],
                        LAST[pick(s, i, 1, 9) as usize]
                    ))
                });
                put(2, &|| {
                    Value::Str(compact_str::format_compact!("p{id}@example.com"))
                });
                put(3, &|| {
                    Value::Str(compact_str::format_compact!("{card} {card} {card} {card}"))
                });
                put(4, &|| st(CITIES[pick(s, i, 3, 10) as usize]));
                put(5, &|| st(STATES[pick(s, i, 4, 6) as usize]));
                put(6, &|| Value::Int(t));
            }
            Kind::Auction => {
                let persons = epoch + 1;
                let id = 1000 + epoch * 3 + (off - 1);
                let initial = 1 + pick(s, i, 0, 1000);
                put(0, &|| int(id));
                put(1, &|| prefixed("item-", id));
                put(2, &|| int(initial));
                put(3, &|| int(initial + pick(s, i, 1, 1000)));
                put(4, &|| int(1000 + epoch - pick(s, i, 2, persons.min(100))));
                put(5, &|| int(10 + pick(s, i, 3, 5)));
                put(6, &|| Value::Int(t));
                put(7, &|| Value::Int(t + 10_000 + pick(s, i, 4, 20_000) as i64));
            }
            Kind::Bid => {
                let auctions = epoch * 3 + 3;
                let persons = epoch + 1;
                put(0, &|| {
                    int(if pick(s, i, 0, 2) == 0 {
                        1000 + ((auctions - 1) / 100) * 100
                    } else {
                        1000 + auctions - 1 - pick(s, i, 1, auctions.min(100))
                    })
                });
                put(1, &|| {
                    int(if pick(s, i, 2, 4) == 0 {
                        1000 + (epoch / 100) * 100
                    } else {
                        1000 + epoch - pick(s, i, 3, persons.min(100))
                    })
                });
                put(2, &|| int(100 + pick(s, i, 4, 100_000)));
                put(3, &|| st(CHANNELS[pick(s, i, 5, 4) as usize]));
                put(4, &|| {
                    prefixed("https://nexmark.example/item/", pick(s, i, 6, 1000))
                });
                put(5, &|| Value::Int(t));
            }
        }
    }
}

/// Instances read units of whole 50-event epochs handed out on demand (`splits`), so each
/// sees the same mix of kinds.
pub struct NexmarkSource {
    config: NexmarkConfig,
    clock: Clock,
    seed_mix: u64,
    /// Where this instance is in the units all instances share (`next`: the next index to
    /// look at).
    cursor: Cursor,
    time: TimeField,
    projection: Option<Arc<[bool]>>,
}

/// Indices per unit: whole epochs, about a quarter of a second of event time (see
/// `generator::unit_of`).
pub fn unit_of(events_per_second: u64) -> u64 {
    (events_per_second / 4 / 50).clamp(6, 80) * 50
}

impl NexmarkSource {
    pub fn new(
        config: NexmarkConfig,
        splits: Arc<Dispenser>,
        time: TimeField,
        projection: Option<Arc<[bool]>>,
    ) -> NexmarkSource {
        NexmarkSource {
            clock: Clock::new(config.start_time, config.events_per_second),
            seed_mix: mix64(config.seed),
            config,
            cursor: Cursor::new(splits),
            time,
            projection,
        }
    }

    /// Moves `next` to the first index of this source's kind at or after it (`to` if none in
    /// the unit).
    fn skip_to_kind(&mut self) {
        let (kind, c) = (self.config.kind, &mut self.cursor);
        while c.next < c.to && Kind::of(c.next) != kind {
            c.next += 1;
        }
    }
}

impl Source for NexmarkSource {
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError> {
        let now = super::now_ms();
        let mut left = max;
        while left > 0 {
            self.skip_to_kind();
            if self.cursor.next >= self.cursor.to {
                if let Some(more) = self.cursor.refill() {
                    return Ok(more);
                }
                continue;
            }
            let (config, clock) = (&self.config, &self.clock);
            let (time, mask) = (self.time, self.projection.as_deref());
            let (seed_mix, i) = (self.seed_mix, self.cursor.next);
            // Written straight into the batch: no row to build and move.
            out.push_with(|values| {
                let at = values.len();
                config.record_projected(clock, seed_mix, i, values, mask);
                time.take(values, at, now)
            });
            self.cursor.next += 1;
            left -= 1;
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
