//! One key's buffered rows of one join side in one window.
//!
//! The rows lie end to end in one vector that holds a row of up to two fields inline: most
//! keys of a window join (q8's persons, each opening a few auctions) hold a row or two a side.
//! A boxed slice per row in a vector per key cost an allocation per row and one per key, and
//! their frees when the window fired: a seventh of a P=1 window join's CPU in malloc and free.

use crate::record::Value;
use smallvec::SmallVec;

#[derive(Debug, Default, Clone)]
pub(super) struct Rows {
    values: SmallVec<[Value; 2]>,
    /// Rows held: their width is `values.len() / len` (a side's rows share its schema).
    len: usize,
}

impl Rows {
    pub(super) fn new() -> Rows {
        Rows::default()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `row`, which has the width of the rows held.
    pub(super) fn push(&mut self, row: &[Value]) {
        debug_assert!(self.len == 0 || row.len() * self.len == self.values.len());
        self.values.extend(row.iter().cloned());
        self.len += 1;
    }

    /// Appends `row`, which has the width of the rows held.
    pub(super) fn push_owned(&mut self, row: Vec<Value>) {
        debug_assert!(self.len == 0 || row.len() * self.len == self.values.len());
        self.values.extend(row);
        self.len += 1;
    }

    /// The rows from the `from`th on, in the order they came.
    pub(super) fn iter_from(&self, from: usize) -> impl Iterator<Item = &[Value]> + Clone {
        let w = self.values.len().checked_div(self.len).unwrap_or(0);
        (from..self.len).map(move |i| &self.values[i * w..(i + 1) * w])
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &[Value]> + Clone {
        self.iter_from(0)
    }

    /// Appends copies of `other`'s rows from the `from`th on.
    pub(super) fn extend_from(&mut self, other: &Rows, from: usize) {
        for row in other.iter_from(from) {
            self.push(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_order_and_width() {
        for width in 0..4usize {
            let row = |i: usize| -> Vec<Value> {
                (0..width)
                    .map(|f| match f {
                        0 => Value::Int(i as i64),
                        _ => Value::from(
                            format!("row {i} field {f}, long enough for the heap").as_str(),
                        ),
                    })
                    .collect()
            };
            let mut rows = Rows::new();
            assert!(rows.is_empty());
            for i in 0..5 {
                if i % 2 == 0 {
                    rows.push(&row(i));
                } else {
                    rows.push_owned(row(i));
                }
            }
            assert_eq!(rows.len(), 5);
            let all: Vec<Vec<Value>> = rows.iter().map(<[Value]>::to_vec).collect();
            assert_eq!(all, (0..5).map(row).collect::<Vec<_>>(), "width {width}");
            let mut tail = Rows::new();
            tail.push(&row(9));
            tail.extend_from(&rows, 3);
            let got: Vec<Vec<Value>> = tail.iter().map(<[Value]>::to_vec).collect();
            assert_eq!(got, vec![row(9), row(3), row(4)], "width {width}");
            assert_eq!(rows.iter_from(5).count(), 0);
        }
    }
}
