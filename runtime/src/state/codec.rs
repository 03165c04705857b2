//! Byte encodings of state: values, rows, accumulators and order-preserving integers.
//!
//! Values are written in the canonical key bytes of `exchange::canonical_bytes` (tag, then
//! payload), so a stored key decodes back to the values it came from and hashes to the same key
//! group as the record did.

use super::StateError;
use crate::exchange::canonical_value_bytes;
use crate::operators::aggregate::Acc;
use crate::record::Value;

pub fn put_value(v: &Value, out: &mut Vec<u8>) {
    canonical_value_bytes(v, out);
}

pub fn put_values(vs: &[Value], out: &mut Vec<u8>) {
    for v in vs {
        put_value(v, out);
    }
}

/// An i64 whose big-endian bytes sort like the number (sign bit flipped).
pub fn put_ordered_i64(x: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((x as u64) ^ (1 << 63)).to_be_bytes());
}

pub fn put_u64(x: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// Reads encoded data front to back.
pub struct Reader<'a> {
    buf: &'a [u8],
}

fn corrupt(what: &str) -> StateError {
    StateError::Corrupt(format!("truncated {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StateError> {
        if self.buf.len() < n {
            return Err(corrupt(what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn arr8(&mut self, what: &str) -> Result<[u8; 8], StateError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1, "byte")?[0])
    }

    pub fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.arr8("u64")?))
    }

    pub fn ordered_i64(&mut self) -> Result<i64, StateError> {
        Ok((u64::from_be_bytes(self.arr8("i64")?) ^ (1 << 63)) as i64)
    }

    pub fn value(&mut self) -> Result<Value, StateError> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Int(i64::from_le_bytes(self.arr8("int")?)),
            4 => Value::Double(f64::from_bits(u64::from_le_bytes(self.arr8("double")?))),
            5 => {
                let mut l = [0u8; 4];
                l.copy_from_slice(self.take(4, "string length")?);
                let bytes = self.take(u32::from_le_bytes(l) as usize, "string")?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| StateError::Corrupt("string is not UTF-8".into()))?;
                Value::Str(s.into())
            }
            t => return Err(StateError::Corrupt(format!("unknown value tag {t}"))),
        })
    }

    pub fn values(&mut self, n: usize) -> Result<Vec<Value>, StateError> {
        (0..n).map(|_| self.value()).collect()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

pub fn put_acc(a: &Acc, out: &mut Vec<u8>) {
    match a {
        Acc::Count(n) => {
            out.push(0);
            put_u64(*n as u64, out);
        }
        Acc::Sum(v) => {
            out.push(1);
            put_value(v, out);
        }
        Acc::Min(v) => {
            out.push(2);
            put_value(v, out);
        }
        Acc::Max(v) => {
            out.push(3);
            put_value(v, out);
        }
        Acc::Avg(s, n) => {
            out.push(4);
            put_u64(s.to_bits(), out);
            put_u64(*n as u64, out);
        }
        Acc::Distinct(set) => {
            out.push(5);
            put_u64(set.len() as u64, out);
            // Sorted, so equal states encode equally.
            let mut vs: Vec<&Value> = set.iter().collect();
            vs.sort_by(|a, b| a.total_cmp(b));
            for v in vs {
                put_value(v, out);
            }
        }
        Acc::First(tv) => {
            out.push(6);
            put_u64(tv.0 as u64, out);
            put_value(&tv.1, out);
        }
        Acc::Last(tv) => {
            out.push(7);
            put_u64(tv.0 as u64, out);
            put_value(&tv.1, out);
        }
    }
}

impl Reader<'_> {
    pub fn acc(&mut self) -> Result<Acc, StateError> {
        Ok(match self.u8()? {
            0 => Acc::Count(self.u64()? as i64),
            1 => Acc::Sum(self.value()?),
            2 => Acc::Min(self.value()?),
            3 => Acc::Max(self.value()?),
            4 => Acc::Avg(f64::from_bits(self.u64()?), self.u64()? as i64),
            5 => {
                let n = self.u64()? as usize;
                let mut set = std::collections::HashSet::default();
                for _ in 0..n {
                    set.insert(self.value()?);
                }
                Acc::Distinct(Box::new(set))
            }
            6 => Acc::First(Box::new((self.u64()? as i64, self.value()?))),
            7 => Acc::Last(Box::new((self.u64()? as i64, self.value()?))),
            t => return Err(StateError::Corrupt(format!("unknown accumulator tag {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_accumulators_round_trip() {
        let vals = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Double(2.5),
            Value::Str("héllo".into()),
        ];
        let mut b = Vec::new();
        put_values(&vals, &mut b);
        put_ordered_i64(-5, &mut b);
        let accs = vec![
            Acc::Count(3),
            Acc::Avg(1.5, 2),
            Acc::Last(Box::new((9, Value::Str("x".into())))),
        ];
        for a in &accs {
            put_acc(a, &mut b);
        }
        let mut r = Reader::new(&b);
        assert_eq!(r.values(5).unwrap(), vals);
        assert_eq!(r.ordered_i64().unwrap(), -5);
        for a in &accs {
            assert_eq!(format!("{:?}", r.acc().unwrap()), format!("{a:?}"));
        }
        assert!(r.is_empty());
        assert!(Reader::new(&b[..3]).values(3).is_err());
    }

    #[test]
    fn ordered_i64_sorts_like_numbers() {
        let xs = [i64::MIN, -10, -1, 0, 1, 10, i64::MAX];
        let enc: Vec<Vec<u8>> = xs
            .iter()
            .map(|x| {
                let mut b = Vec::new();
                put_ordered_i64(*x, &mut b);
                b
            })
            .collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
    }
}
