//! Compiled expressions agree with the `cel` crate's interpreter on random records.

use super::{Scope, V, compile};
use crate::record::{Schema, Type, Value};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const EXPRS: &[&str] = &[
    "event.a + event.b > 10",
    "event.s.startsWith('x') || event.a % 3 == 1",
    "event.a * 2 - event.b",
    "size(event.s) + event.a",
    "event.d * 1.5 < event.e",
    "event.a in [1, 2, 3, -4]",
    "!(event.a < event.b) ? event.s + 'y' : 'z'",
    "event.a / event.b",
    "event.s.contains('ab') && event.d >= 0.0",
    "double(event.a) / 2.0",
    "event.a == event.d",
    "event.s.endsWith(event.t)",
    "-event.a + 7 * (event.b % 5)",
    "event.s < event.t",
    "event.a > 3",
    "-10 <= event.b",
    "event.s == 'xa'",
    "event.d != 2.5",
    "3.5 > event.a",
    "event.a == 7",
    "'ab' >= event.t",
];

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new([
        ("a", Type::Int),
        ("b", Type::Int),
        ("d", Type::Double),
        ("e", Type::Double),
        ("s", Type::String),
        ("t", Type::String),
    ]))
}

fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Int(i) => cel::Value::Int(*i),
        Value::Double(d) => cel::Value::Float(*d),
        Value::Str(s) => cel::Value::String(Arc::new(s.to_string())),
    }
}

fn same(ours: &V<'_>, theirs: &cel::Value) -> bool {
    match (ours, theirs) {
        (V::Bool(a), cel::Value::Bool(b)) => a == b,
        (V::Int(a), cel::Value::Int(b)) => a == b,
        (V::Double(a), cel::Value::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
        (V::Null, cel::Value::Null) => true,
        (s, cel::Value::String(b)) => s.str() == Some(b.as_str()),
        _ => false,
    }
}

fn text() -> impl Strategy<Value = String> {
    "[xab]{0,4}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_the_interpreter(
        a in -50i64..50, b in -5i64..5, d in -100.0f64..100.0, e in -100.0f64..100.0,
        s in text(), t in text(), which in 0..EXPRS.len(),
    ) {
        let src = EXPRS[which];
        let row = vec![Value::Int(a), Value::Int(b), Value::Double(d), Value::Double(e), Value::from(s.as_str()), Value::from(t.as_str())];
        let compiled = compile(src, &Scope::event(schema())).expect("compiles");
        let ours = compiled.eval(&[&row]);
        let program = cel::Program::compile(src).expect("cel parses");
        let mut ctx = cel::Context::default();
        let fields: HashMap<String, cel::Value> =
            schema().fields.iter().zip(&row).map(|(f, v)| (f.name.clone(), to_cel(v))).collect();
        ctx.add_variable_from_value("event", fields);
        let theirs = program.execute(&ctx);
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => prop_assert!(same(o, t), "{src}: ours {o:?}, cel {t:?}"),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{src}: ours {ours:?}, cel {theirs:?}"),
        }
    }
}
