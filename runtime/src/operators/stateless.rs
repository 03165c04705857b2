//! Record-at-a-time operators: `filter`, `map` and `split`.

use super::{Emit, Operator};
use crate::expr::Compiled;
use crate::record::{Batch, Schema};
use std::sync::Arc;

pub struct Filter {
    pred: Arc<Compiled>,
    keep: Vec<bool>,
}

impl Filter {
    pub fn new(pred: Arc<Compiled>) -> Filter {
        Filter {
            pred,
            keep: Vec::new(),
        }
    }
}

impl Operator for Filter {
    fn on_batch(&mut self, _port: usize, mut batch: Batch, out: &mut Emit) {
        self.keep.clear();
        for (row, _) in batch.rows() {
            match self.pred.eval_bool(&[row]) {
                Ok(k) => self.keep.push(k),
                Err(e) => {
                    out.dead_row(&batch.schema, row, format!("filter: {e}"));
                    self.keep.push(false);
                }
            }
        }
        batch.retain(&self.keep);
        out.batch(batch);
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut Emit) {}
}

pub struct Map {
    exprs: Arc<Vec<Compiled>>,
    schema: Arc<Schema>,
}

impl Map {
    pub fn new(exprs: Arc<Vec<Compiled>>, schema: Arc<Schema>) -> Map {
        Map { exprs, schema }
    }
}

impl Operator for Map {
    fn on_batch(&mut self, _port: usize, batch: Batch, out: &mut Emit) {
        let mut next = Batch::with_capacity(self.schema.clone(), batch.len());
        let mut vals = Vec::with_capacity(self.exprs.len());
        'rows: for (row, time) in batch.rows() {
            vals.clear();
            for (e, f) in self.exprs.iter().zip(&self.schema.fields) {
                match e.eval_value(&[row]) {
                    Ok(v) => vals.push(v),
                    Err(err) => {
                        out.dead_row(&batch.schema, row, format!("map.{}: {err}", f.name));
                        continue 'rows;
                    }
                }
            }
            next.push(vals.drain(..), time);
        }
        out.batch(next);
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut Emit) {}
}

pub struct Split {
    spec: Arc<(Compiled, String)>,
    schema: Arc<Schema>,
}

impl Split {
    pub fn new(spec: Arc<(Compiled, String)>, schema: Arc<Schema>) -> Split {
        Split { spec, schema }
    }
}

impl Operator for Split {
    fn on_batch(&mut self, _port: usize, batch: Batch, out: &mut Emit) {
        let mut next = Batch::with_capacity(self.schema.clone(), batch.len() * 4);
        let (expr, sep) = &*self.spec;
        for (row, time) in batch.rows() {
            let v = match expr.eval(&[row]) {
                Ok(v) => v,
                Err(e) => {
                    out.dead_row(&batch.schema, row, format!("split: {e}"));
                    continue;
                }
            };
            let Some(text) = v.str() else {
                out.dead_row(
                    &batch.schema,
                    row,
                    format!("split: expected a string, got {}", v.type_name()),
                );
                continue;
            };
            for piece in text.split(sep.as_str()).filter(|p| !p.is_empty()) {
                next.push(
                    row.iter()
                        .cloned()
                        .chain([crate::record::Value::from(piece)]),
                    time,
                );
            }
        }
        out.batch(next);
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut Emit) {}
}
