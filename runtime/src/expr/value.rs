use crate::record::{Type, Value};
use compact_str::CompactString;
use std::borrow::Cow;
use std::fmt;

/// A value during evaluation: strings borrow from the row when they can, so a filter on a
/// string field allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
    Owned(CompactString),
}

impl<'a> V<'a> {
    pub fn from_value(v: &'a Value) -> V<'a> {
        match v {
            Value::Null => V::Null,
            Value::Bool(b) => V::Bool(*b),
            Value::Int(i) => V::Int(*i),
            Value::Double(d) => V::Double(*d),
            Value::Str(s) => V::Str(s.as_str()),
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Bool(b) => Value::Bool(b),
            V::Int(i) => Value::Int(i),
            V::Double(d) => Value::Double(d),
            V::Str(s) => Value::Str(CompactString::from(s)),
            V::Owned(s) => Value::Str(s),
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            V::Owned(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Double(_) => "double",
            V::Str(_) | V::Owned(_) => "string",
        }
    }

    pub fn ty(&self) -> Type {
        match self {
            V::Null => Type::Any,
            V::Bool(_) => Type::Bool,
            V::Int(_) => Type::Int,
            V::Double(_) => Type::Double,
            V::Str(_) | V::Owned(_) => Type::String,
        }
    }
}

/// Why an expression could not be evaluated for one record; the record is dead-lettered with
/// this reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError(pub Cow<'static, str>);

impl EvalError {
    pub fn new(msg: impl Into<Cow<'static, str>>) -> EvalError {
        EvalError(msg.into())
    }

    pub fn no_overload(op: &str, a: &V<'_>, b: &V<'_>) -> EvalError {
        EvalError(Cow::Owned(format!(
            "no such overload: {} {op} {}",
            a.type_name(),
            b.type_name()
        )))
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EvalError {}
