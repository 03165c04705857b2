//! Aggregate functions and their accumulators. Nulls are ignored, as in SQL; `count()` counts
//! rows. `first`/`last` go by event time (arrival order breaks ties), so results do not depend
//! on how records were spread over workers.

use crate::expr::{Compiled, EvalError, V};
use crate::record::{Type, Value};
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    First,
    Last,
}

impl AggKind {
    pub const NAMES: &'static str = "count, sum, min, max, avg, count_distinct, first, last";

    pub fn parse(name: &str) -> Option<AggKind> {
        Some(match name {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "avg" => AggKind::Avg,
            "count_distinct" => AggKind::CountDistinct,
            "first" => AggKind::First,
            "last" => AggKind::Last,
            _ => return None,
        })
    }

    /// Result type given the argument's type.
    pub fn result_type(self, arg: Type) -> Type {
        match self {
            AggKind::Count | AggKind::CountDistinct => Type::Int,
            AggKind::Avg => Type::Double,
            _ => arg,
        }
    }
}

#[derive(Debug)]
pub struct AggSpec {
    pub name: String,
    pub kind: AggKind,
    /// `None` only for `count()`.
    pub arg: Option<Compiled>,
}

#[derive(Debug, Clone)]
pub enum Acc {
    Count(i64),
    Sum(Value),
    Min(Value),
    Max(Value),
    Avg(f64, i64),
    /// Boxed: the set is 40 bytes, and every accumulator is as large as the largest (a
    /// count's entry in a window's slice map was 112 bytes for 8 bytes of count; now 80).
    Distinct(Box<HashSet<Value, foldhash::fast::RandomState>>),
    /// The value with the earliest time. Boxed like `Distinct`: a time and a value inline
    /// made every accumulator 40 bytes, and a count's entry 96; with the box, 32 and 80, and
    /// a slice of a keyed count's keys stays in this machine's 1 MiB L2 longer.
    First(Box<(i64, Value)>),
    /// The value with the latest time (boxed as `First`).
    Last(Box<(i64, Value)>),
}

impl Acc {
    pub fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::Count => Acc::Count(0),
            AggKind::Sum => Acc::Sum(Value::Null),
            AggKind::Min => Acc::Min(Value::Null),
            AggKind::Max => Acc::Max(Value::Null),
            AggKind::Avg => Acc::Avg(0.0, 0),
            AggKind::CountDistinct => Acc::Distinct(Box::default()),
            AggKind::First => Acc::First(Box::new((i64::MAX, Value::Null))),
            AggKind::Last => Acc::Last(Box::new((i64::MIN, Value::Null))),
        }
    }

    /// Whether [`Acc::update`] with `v` would succeed (it fails only for sums and averages).
    pub fn accepts(&self, v: &V<'_>) -> bool {
        match self {
            _ if matches!(v, V::Null) => true,
            Acc::Sum(s) => add(s, v).is_ok(),
            Acc::Avg(..) => matches!(v, V::Int(_) | V::Double(_)),
            _ => true,
        }
    }

    /// Adds one record's argument value (`V::Null` for `count()`).
    #[inline]
    pub fn update(&mut self, v: V<'_>, ts: i64, count_rows: bool) -> Result<(), EvalError> {
        if let Acc::Count(n) = self {
            if count_rows || !matches!(v, V::Null) {
                *n += 1;
            }
            return Ok(());
        }
        if matches!(v, V::Null) {
            return Ok(());
        }
        match self {
            Acc::Count(_) => {}
            Acc::Sum(s) => *s = add(s, &v)?,
            Acc::Min(m) => {
                if matches!(m, Value::Null) || cmp_vv(&v, m).is_lt() {
                    *m = v.into_value();
                }
            }
            Acc::Max(m) => {
                if matches!(m, Value::Null) || cmp_vv(&v, m).is_gt() {
                    *m = v.into_value();
                }
            }
            Acc::Avg(sum, n) => {
                let x = match v {
                    V::Int(i) => i as f64,
                    V::Double(d) => d,
                    other => return Err(EvalError::new(format!("avg of a {}", other.type_name()))),
                };
                *sum += x;
                *n += 1;
            }
            Acc::Distinct(set) => {
                let v = v.into_value();
                if !set.contains(&v) {
                    set.insert(v);
                }
            }
            Acc::First(first) => {
                if ts < first.0 {
                    **first = (ts, v.into_value());
                }
            }
            Acc::Last(last) => {
                if ts >= last.0 {
                    **last = (ts, v.into_value());
                }
            }
        }
        Ok(())
    }

    /// Folds `other` (a later or overlapping part of the same window) into `self`.
    pub fn merge(&mut self, other: &Acc) -> Result<(), EvalError> {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) => {
                if !matches!(b, Value::Null) {
                    *a = add(a, &V::from_value(b))?;
                }
            }
            (Acc::Min(a), Acc::Min(b)) => {
                if !matches!(b, Value::Null) && (matches!(a, Value::Null) || b.total_cmp(a).is_lt())
                {
                    *a = b.clone();
                }
            }
            (Acc::Max(a), Acc::Max(b)) => {
                if !matches!(b, Value::Null) && (matches!(a, Value::Null) || b.total_cmp(a).is_gt())
                {
                    *a = b.clone();
                }
            }
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b.iter().cloned()),
            (Acc::First(a), Acc::First(b)) => {
                if b.0 < a.0 {
                    **a = (b.0, b.1.clone());
                }
            }
            (Acc::Last(a), Acc::Last(b)) => {
                if b.0 >= a.0 {
                    **a = (b.0, b.1.clone());
                }
            }
            _ => return Err(EvalError::new("merging different aggregates")),
        }
        Ok(())
    }

    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::Sum(v) | Acc::Min(v) | Acc::Max(v) => v.clone(),
            Acc::First(tv) | Acc::Last(tv) => tv.1.clone(),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(s, n) => Value::Double(s / *n as f64),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
        }
    }
}

fn cmp_vv(a: &V<'_>, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (V::Int(x), Value::Int(y)) => x.cmp(y),
        (V::Str(x), Value::Str(y)) => (*x).cmp(y.as_str()),
        _ => a.clone().into_value().total_cmp(b),
    }
}

fn add(acc: &Value, v: &V<'_>) -> Result<Value, EvalError> {
    Ok(match (acc, v) {
        (Value::Null, V::Int(i)) => Value::Int(*i),
        (Value::Null, V::Double(d)) => Value::Double(*d),
        (Value::Int(a), V::Int(b)) => Value::Int(
            a.checked_add(*b)
                .ok_or_else(|| EvalError::new("sum overflows int: use sum(double(...))"))?,
        ),
        (Value::Double(a), V::Double(b)) => Value::Double(a + b),
        (Value::Int(a), V::Double(b)) => Value::Double(*a as f64 + b),
        (Value::Double(a), V::Int(b)) => Value::Double(a + *b as f64),
        (_, other) => return Err(EvalError::new(format!("sum of a {}", other.type_name()))),
    })
}

/// Accumulators of one key in one window; one or two live inline, without an allocation.
pub type Accs = smallvec::SmallVec<[Acc; 2]>;

/// Fresh accumulators for `specs`.
pub fn new_accs(specs: &[AggSpec]) -> Accs {
    let mut accs = Accs::new();
    init_accs(specs, &mut accs);
    accs
}

/// Appends fresh accumulators for `specs` to `accs`, each written in place.
#[inline]
pub fn init_accs(specs: &[AggSpec], accs: &mut Accs) {
    for s in specs {
        accs.push(Acc::new(s.kind));
    }
}

/// Updates `accs` with one row; on error nothing is half-applied to later aggregates, but
/// earlier ones are, so callers evaluate arguments first (see `eval_args`).
pub fn eval_args<'a>(
    specs: &[AggSpec],
    rows: &[&'a [Value]],
    out: &mut Vec<V<'a>>,
) -> Result<(), EvalError> {
    out.clear();
    for s in specs {
        out.push(match &s.arg {
            Some(e) => e.eval(rows)?,
            None => V::Null,
        });
    }
    Ok(())
}

pub fn apply(
    specs: &[AggSpec],
    accs: &mut [Acc],
    args: &[V<'_>],
    ts: i64,
) -> Result<(), EvalError> {
    for ((s, acc), v) in specs.iter().zip(accs.iter_mut()).zip(args) {
        acc.update(v.clone(), ts, s.arg.is_none())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_sequential_updates() {
        let vals = [V::Int(3), V::Int(-1), V::Int(7), V::Null, V::Int(3)];
        for kind in [
            AggKind::Count,
            AggKind::Sum,
            AggKind::Min,
            AggKind::Max,
            AggKind::Avg,
            AggKind::CountDistinct,
            AggKind::First,
            AggKind::Last,
        ] {
            let mut whole = Acc::new(kind);
            let (mut a, mut b) = (Acc::new(kind), Acc::new(kind));
            for (i, v) in vals.iter().enumerate() {
                whole.update(v.clone(), i as i64, false).unwrap();
                let part = if i < 2 { &mut a } else { &mut b };
                part.update(v.clone(), i as i64, false).unwrap();
            }
            a.merge(&b).unwrap();
            assert_eq!(a.result(), whole.result(), "{kind:?}");
        }
    }

    #[test]
    fn sum_of_ints_reports_overflow() {
        let mut a = Acc::new(AggKind::Sum);
        a.update(V::Int(i64::MAX), 0, false).unwrap();
        assert!(a.update(V::Int(1), 0, false).is_err());
    }
}
