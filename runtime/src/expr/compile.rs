use super::value::{EvalError, V};
use crate::record::{Schema, Type, Value};
use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue};
use compact_str::CompactString;
use std::cmp::Ordering;
use std::sync::Arc;

type F = Box<dyn for<'a> Fn(&[&'a [Value]]) -> Result<V<'a>, EvalError> + Send + Sync>;

/// A compiled expression: evaluate it against the rows of its scope's variables.
pub struct Compiled {
    f: F,
    /// Static result type (`Any` when it depends on data).
    pub ty: Type,
    /// `(variable, field)` when the expression is just a field, so callers that need an owned
    /// value can clone it from the row instead of converting (and copying) a string.
    pub field: Option<(usize, usize)>,
    /// Every field the expression reads, as `(variable, field)`: what projection push-down
    /// keeps.
    pub refs: Vec<(usize, usize)>,
    /// The CEL text it was compiled from (empty when compiled from an AST), which checkpoints
    /// record to detect a changed plan.
    pub text: std::sync::Arc<str>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({:?})", self.ty)
    }
}

impl Compiled {
    /// The value as an owned [`Value`].
    #[inline]
    pub fn eval_value(&self, rows: &[&[Value]]) -> Result<Value, EvalError> {
        match self.field {
            Some((v, f)) => Ok(rows[v][f].clone()),
            None => Ok((self.f)(rows)?.into_value()),
        }
    }

    /// Whether the expression reads no field, so it has one value for every row (the
    /// compiled subset has no clock or random functions).
    pub fn is_constant(&self) -> bool {
        self.refs.is_empty()
    }

    /// Evaluates with one row per scope variable, in scope order.
    #[inline]
    pub fn eval<'a>(&self, rows: &[&'a [Value]]) -> Result<V<'a>, EvalError> {
        // A plain field (aggregate arguments, keys, most `orderBy`s) skips the indirect call.
        if let Some((v, f)) = self.field
            && let Some(value) = rows.get(v).and_then(|r| r.get(f))
        {
            return Ok(V::from_value(value));
        }
        (self.f)(rows)
    }

    #[inline]
    pub fn eval_bool(&self, rows: &[&[Value]]) -> Result<bool, EvalError> {
        match (self.f)(rows)? {
            V::Bool(b) => Ok(b),
            other => Err(EvalError::new(format!(
                "expected a bool, got {}",
                other.type_name()
            ))),
        }
    }
}

/// The variables an expression may name: `event` for most steps, `left` and `right` in a join.
#[derive(Clone, Debug)]
pub struct Scope {
    vars: Vec<(String, Arc<Schema>)>,
    /// Fields the expression being compiled reads, as `(variable, field)`.
    refs: std::cell::RefCell<Vec<(usize, usize)>>,
}

impl Scope {
    pub fn event(schema: Arc<Schema>) -> Scope {
        Scope {
            refs: Default::default(),
            vars: vec![("event".into(), schema)],
        }
    }

    pub fn join(left: Arc<Schema>, right: Arc<Schema>) -> Scope {
        Scope {
            refs: Default::default(),
            vars: vec![("left".into(), left), ("right".into(), right)],
        }
    }

    fn var(&self, name: &str) -> Option<(usize, &Arc<Schema>)> {
        self.vars
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| (i, &self.vars[i].1))
    }

    fn var_names(&self) -> String {
        self.vars
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parses CEL source; the error is one line fit for a plan error message.
pub fn parse(src: &str) -> Result<IdedExpr, String> {
    cel::parser::Parser::new().parse(src).map_err(|e| {
        let text = e.to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("syntax error");
        format!("invalid CEL: {}", first.trim())
    })
}

/// Parses and compiles `src` against `scope`.
pub fn compile(src: &str, scope: &Scope) -> Result<Compiled, String> {
    let mut c = compile_ast(&parse(src)?, scope)?;
    c.text = src.trim().into();
    Ok(c)
}

pub fn compile_ast(ast: &IdedExpr, scope: &Scope) -> Result<Compiled, String> {
    scope.refs.borrow_mut().clear();
    let (f, ty) = node(ast, scope)?;
    let mut refs = std::mem::take(&mut *scope.refs.borrow_mut());
    refs.sort_unstable();
    refs.dedup();
    let field = plain_field(ast, scope);
    Ok(Compiled {
        f,
        ty,
        field,
        refs,
        text: "".into(),
    })
}

/// `(variable, field)` when `e` is just a field of a scope variable, like `event.user`.
fn plain_field(e: &IdedExpr, scope: &Scope) -> Option<(usize, usize)> {
    match &e.expr {
        Expr::Select(sel) if !sel.test => match &sel.operand.expr {
            Expr::Ident(var) => scope
                .var(var)
                .and_then(|(vi, schema)| schema.index_of(&sel.field).map(|fi| (vi, fi))),
            _ => None,
        },
        _ => None,
    }
}

fn unsupported(what: &str) -> String {
    format!(
        "{what} is not supported in Eddy's CEL subset (fields, literals, arithmetic, comparisons, \
         &&, ||, !, ?:, in [list], size, contains, startsWith, endsWith, matches, int, double, string)"
    )
}

fn node(e: &IdedExpr, scope: &Scope) -> Result<(F, Type), String> {
    match &e.expr {
        Expr::Literal(lit) => literal(lit),
        Expr::Ident(name) => match scope.var(name) {
            Some(_) => Err(format!(
                "`{name}` is a whole record: select a field, like `{name}.field`"
            )),
            None => Err(format!(
                "unknown name `{name}`: expressions here can use {}",
                scope.var_names()
            )),
        },
        Expr::Select(sel) => {
            let Expr::Ident(var) = &sel.operand.expr else {
                return Err(unsupported("selecting a field of a computed value"));
            };
            let Some((vi, schema)) = scope.var(var) else {
                return Err(format!(
                    "unknown name `{var}`: expressions here can use {}",
                    scope.var_names()
                ));
            };
            let idx = schema.index_of(&sel.field);
            if let Some(fi) = idx {
                scope.refs.borrow_mut().push((vi, fi));
            }
            if sel.test {
                // has(event.f): the field exists in the schema and is set for this record.
                return Ok(match idx {
                    None => (Box::new(|_: &[&[Value]]| Ok(V::Bool(false))), Type::Bool),
                    Some(fi) => (
                        Box::new(move |rows: &[&[Value]]| {
                            Ok(V::Bool(!matches!(rows[vi][fi], Value::Null)))
                        }),
                        Type::Bool,
                    ),
                });
            }
            let Some(fi) = idx else {
                let names: Vec<&str> = schema.names().collect();
                return Err(format!(
                    "`{var}` has no field `{}`; its fields are: {}",
                    sel.field,
                    names.join(", ")
                ));
            };
            let ty = schema.fields[fi].ty;
            Ok((
                Box::new(move |rows: &[&[Value]]| Ok(V::from_value(&rows[vi][fi]))),
                ty,
            ))
        }
        Expr::Call(call) => call_node(call, scope),
        Expr::List(_) => Err(unsupported("a list outside `x in [...]`")),
        Expr::Map(_) => Err(unsupported("a map literal")),
        Expr::Struct(_) => Err(unsupported("a message literal")),
        Expr::Comprehension(_) => Err(unsupported("a comprehension (all, exists, map, filter)")),
        Expr::Unspecified => Err(unsupported("this expression")),
    }
}

fn literal(lit: &LiteralValue) -> Result<(F, Type), String> {
    let v: Value = match lit {
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::UInt(u) => match i64::try_from(*u.inner()) {
            Ok(i) => Value::Int(i),
            Err(_) => return Err("unsigned literal too large for int".into()),
        },
        LiteralValue::Double(d) => Value::Double(*d.inner()),
        LiteralValue::String(s) => Value::Str(CompactString::from(s.inner())),
        LiteralValue::Null => Value::Null,
        LiteralValue::Bytes(_) => return Err(unsupported("a bytes literal")),
    };
    let ty = Type::of(&v);
    Ok(match v {
        // Plan literals live as long as the process, so a leaked copy lets every evaluation
        // borrow the string instead of cloning it per record.
        Value::Str(s) => {
            let s: &'static str = Box::leak(s.to_string().into_boxed_str());
            (Box::new(move |_: &[&[Value]]| Ok(V::Str(s))), ty)
        }
        Value::Null => (Box::new(|_: &[&[Value]]| Ok(V::Null)), ty),
        Value::Bool(b) => (Box::new(move |_: &[&[Value]]| Ok(V::Bool(b))), ty),
        Value::Int(i) => (Box::new(move |_: &[&[Value]]| Ok(V::Int(i))), ty),
        Value::Double(d) => (Box::new(move |_: &[&[Value]]| Ok(V::Double(d))), ty),
    })
}

fn call_node(call: &CallExpr, scope: &Scope) -> Result<(F, Type), String> {
    use cel::common::ast::operators as op;
    let name = call.func_name.as_str();
    // Receiver-style calls (`event.page.startsWith('x')`) put the receiver first.
    let mut args: Vec<&IdedExpr> = Vec::new();
    if let Some(t) = &call.target {
        args.push(t);
    }
    args.extend(call.args.iter());
    let n = args.len();
    let want = |k: usize| -> Result<(), String> {
        if n != k {
            Err(format!("`{name}` takes {k} argument(s), got {n}"))
        } else {
            Ok(())
        }
    };
    match name {
        op::LOGICAL_AND | op::LOGICAL_OR => {
            want(2)?;
            let (a, ta) = node(args[0], scope)?;
            let (b, tb) = node(args[1], scope)?;
            check_bool(name, ta)?;
            check_bool(name, tb)?;
            let is_and = name == op::LOGICAL_AND;
            // CEL's commutative short-circuit: `false && error` and `error && false` are false.
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    let absorbing = !is_and;
                    let l = a(rows);
                    if let Ok(V::Bool(x)) = l
                        && x == absorbing
                    {
                        return Ok(V::Bool(absorbing));
                    }
                    let r = b(rows);
                    if let Ok(V::Bool(x)) = r
                        && x == absorbing
                    {
                        return Ok(V::Bool(absorbing));
                    }
                    match (l?, r?) {
                        (V::Bool(_), V::Bool(_)) => Ok(V::Bool(!absorbing)),
                        (x, y) => Err(EvalError::no_overload(
                            if is_and { "&&" } else { "||" },
                            &x,
                            &y,
                        )),
                    }
                }),
                Type::Bool,
            ))
        }
        op::LOGICAL_NOT => {
            want(1)?;
            let (a, ta) = node(args[0], scope)?;
            check_bool(name, ta)?;
            Ok((
                Box::new(move |rows: &[&[Value]]| match a(rows)? {
                    V::Bool(b) => Ok(V::Bool(!b)),
                    x => Err(EvalError::new(format!(
                        "no such overload: !{}",
                        x.type_name()
                    ))),
                }),
                Type::Bool,
            ))
        }
        op::NEGATE => {
            want(1)?;
            let (a, ta) = node(args[0], scope)?;
            if !matches!(ta, Type::Int | Type::Double | Type::Any) {
                return Err(format!("cannot negate a {ta:?}"));
            }
            Ok((
                Box::new(move |rows: &[&[Value]]| match a(rows)? {
                    V::Int(i) => i
                        .checked_neg()
                        .map(V::Int)
                        .ok_or_else(|| EvalError::new("integer overflow")),
                    V::Double(d) => Ok(V::Double(-d)),
                    x => Err(EvalError::new(format!(
                        "no such overload: -{}",
                        x.type_name()
                    ))),
                }),
                ta,
            ))
        }
        op::CONDITIONAL => {
            want(3)?;
            let (c, tc) = node(args[0], scope)?;
            check_bool("?:", tc)?;
            let (a, ta) = node(args[1], scope)?;
            let (b, tb) = node(args[2], scope)?;
            let ty = if ta == tb { ta } else { Type::Any };
            Ok((
                Box::new(move |rows: &[&[Value]]| match c(rows)? {
                    V::Bool(true) => a(rows),
                    V::Bool(false) => b(rows),
                    x => Err(EvalError::new(format!(
                        "condition is a {}, not a bool",
                        x.type_name()
                    ))),
                }),
                ty,
            ))
        }
        op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO => {
            want(2)?;
            arith(name, args[0], args[1], scope)
        }
        op::EQUALS | op::NOT_EQUALS => {
            want(2)?;
            let (a, _) = node(args[0], scope)?;
            let (b, _) = node(args[1], scope)?;
            let neg = name == op::NOT_EQUALS;
            if let Some((vi, fi, lit)) = field_and_literal(args[0], args[1], scope) {
                // `event.f == 'x'`: one closure, no calls for the operands.
                return Ok((
                    Box::new(move |rows: &[&[Value]]| {
                        Ok(V::Bool(
                            eq_v(&V::from_value(&rows[vi][fi]), &V::from_value(&lit)) != neg,
                        ))
                    }),
                    Type::Bool,
                ));
            }
            Ok((
                Box::new(move |rows: &[&[Value]]| Ok(V::Bool(eq_v(&a(rows)?, &b(rows)?) != neg))),
                Type::Bool,
            ))
        }
        op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS => {
            want(2)?;
            let (a, ta) = node(args[0], scope)?;
            let (b, tb) = node(args[1], scope)?;
            if !comparable(ta, tb) {
                return Err(format!("cannot compare a {ta:?} with a {tb:?}"));
            }
            let test: fn(Ordering) -> bool = match name {
                op::LESS => Ordering::is_lt,
                op::LESS_EQUALS => Ordering::is_le,
                op::GREATER => Ordering::is_gt,
                _ => Ordering::is_ge,
            };
            if let Some((vi, fi, lit)) = field_and_literal(args[0], args[1], scope) {
                // `event.f > 100` (or `100 < event.f`, with the test mirrored).
                let flipped = !matches!(args[0].expr, Expr::Select(_));
                return Ok((
                    Box::new(move |rows: &[&[Value]]| {
                        let (f, l) = (V::from_value(&rows[vi][fi]), V::from_value(&lit));
                        let o = if flipped {
                            cmp_v(&l, &f)?
                        } else {
                            cmp_v(&f, &l)?
                        };
                        Ok(V::Bool(o.is_some_and(test)))
                    }),
                    Type::Bool,
                ));
            }
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    let (x, y) = (a(rows)?, b(rows)?);
                    Ok(V::Bool(cmp_v(&x, &y)?.is_some_and(test)))
                }),
                Type::Bool,
            ))
        }
        op::IN => {
            want(2)?;
            let (a, _) = node(args[0], scope)?;
            let Expr::List(list) = &args[1].expr else {
                return Err(unsupported("`in` with anything but a list literal"));
            };
            let mut items = Vec::new();
            for el in &list.elements {
                let Expr::Literal(l) = &el.expr else {
                    return Err(unsupported("a non-literal element in `in [...]`"));
                };
                let (f, _) = literal(l)?;
                items.push(f(&[]).map_err(|e| e.to_string())?.into_value());
            }
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    let x = a(rows)?;
                    Ok(V::Bool(items.iter().any(|i| eq_v(&x, &V::from_value(i)))))
                }),
                Type::Bool,
            ))
        }
        "size" => {
            want(1)?;
            let (a, _) = node(args[0], scope)?;
            Ok((
                Box::new(move |rows: &[&[Value]]| match a(rows)? {
                    x @ (V::Str(_) | V::Owned(_)) => {
                        Ok(V::Int(x.str().map_or(0, |s| s.chars().count()) as i64))
                    }
                    x => Err(EvalError::new(format!(
                        "no such overload: size({})",
                        x.type_name()
                    ))),
                }),
                Type::Int,
            ))
        }
        "contains" | "startsWith" | "endsWith" => {
            want(2)?;
            let (a, ta) = node(args[0], scope)?;
            let (b, tb) = node(args[1], scope)?;
            check_str(name, ta)?;
            check_str(name, tb)?;
            let test: fn(&str, &str) -> bool = match name {
                "contains" => |s, p| s.contains(p),
                "startsWith" => |s, p| s.starts_with(p),
                _ => |s, p| s.ends_with(p),
            };
            let fname = name.to_string();
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    let (x, y) = (a(rows)?, b(rows)?);
                    match (x.str(), y.str()) {
                        (Some(s), Some(p)) => Ok(V::Bool(test(s, p))),
                        _ => Err(EvalError::no_overload(&fname, &x, &y)),
                    }
                }),
                Type::Bool,
            ))
        }
        "matches" => {
            want(2)?;
            let (a, ta) = node(args[0], scope)?;
            check_str(name, ta)?;
            let pattern = match &args[1].expr {
                Expr::Literal(LiteralValue::String(s)) => s.inner().to_string(),
                _ => {
                    return Err(unsupported(
                        "`matches` with a pattern that is not a string literal",
                    ));
                }
            };
            let re =
                regex::Regex::new(&pattern).map_err(|e| format!("bad regular expression: {e}"))?;
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    let x = a(rows)?;
                    match x.str() {
                        Some(s) => Ok(V::Bool(re.is_match(s))),
                        None => Err(EvalError::new(format!(
                            "no such overload: matches({})",
                            x.type_name()
                        ))),
                    }
                }),
                Type::Bool,
            ))
        }
        "int" => {
            want(1)?;
            let (a, _) = node(args[0], scope)?;
            Ok((
                Box::new(move |rows: &[&[Value]]| match a(rows)? {
                    V::Int(i) => Ok(V::Int(i)),
                    V::Double(d) => {
                        if d.is_finite() && d >= i64::MIN as f64 && d < i64::MAX as f64 {
                            Ok(V::Int(d.trunc() as i64))
                        } else {
                            Err(EvalError::new("double out of int range"))
                        }
                    }
                    V::Bool(b) => Ok(V::Int(b as i64)),
                    x @ (V::Str(_) | V::Owned(_)) => {
                        let s = x.str().unwrap_or_default();
                        s.parse::<i64>()
                            .map(V::Int)
                            .map_err(|_| EvalError::new(format!("cannot convert {s:?} to int")))
                    }
                    V::Null => Err(EvalError::new("no such overload: int(null)")),
                }),
                Type::Int,
            ))
        }
        "double" => {
            want(1)?;
            let (a, _) = node(args[0], scope)?;
            Ok((
                Box::new(move |rows: &[&[Value]]| match a(rows)? {
                    V::Int(i) => Ok(V::Double(i as f64)),
                    V::Double(d) => Ok(V::Double(d)),
                    x @ (V::Str(_) | V::Owned(_)) => {
                        let s = x.str().unwrap_or_default();
                        s.parse::<f64>()
                            .map(V::Double)
                            .map_err(|_| EvalError::new(format!("cannot convert {s:?} to double")))
                    }
                    x => Err(EvalError::new(format!(
                        "no such overload: double({})",
                        x.type_name()
                    ))),
                }),
                Type::Double,
            ))
        }
        "string" => {
            want(1)?;
            let (a, _) = node(args[0], scope)?;
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    Ok(match a(rows)? {
                        V::Int(i) => V::Owned(compact_str::format_compact!("{i}")),
                        V::Double(d) => V::Owned(compact_str::format_compact!("{d}")),
                        V::Bool(b) => V::Str(if b { "true" } else { "false" }),
                        s @ (V::Str(_) | V::Owned(_)) => s,
                        V::Null => return Err(EvalError::new("no such overload: string(null)")),
                    })
                }),
                Type::String,
            ))
        }
        "lowerAscii" | "upperAscii" => {
            want(1)?;
            let (a, ta) = node(args[0], scope)?;
            check_str(name, ta)?;
            let lower = name == "lowerAscii";
            Ok((
                Box::new(move |rows: &[&[Value]]| {
                    let x = a(rows)?;
                    let s = x.str().ok_or_else(|| {
                        EvalError::new("no such overload: lowerAscii on a non-string")
                    })?;
                    let mut o = CompactString::from(s);
                    if lower {
                        o.make_ascii_lowercase()
                    } else {
                        o.make_ascii_uppercase()
                    }
                    Ok(V::Owned(o))
                }),
                Type::String,
            ))
        }
        op::INDEX | op::OPT_INDEX => Err(unsupported("indexing (`x[i]`)")),
        other => Err(format!("unknown function `{other}`; {}", unsupported("it"))),
    }
}

/// `(variable, field, literal)` when one operand is a plain field and the other a literal.
fn field_and_literal(x: &IdedExpr, y: &IdedExpr, scope: &Scope) -> Option<(usize, usize, Value)> {
    let field = |e: &IdedExpr| plain_field(e, scope);
    let lit = |e: &IdedExpr| match &e.expr {
        Expr::Literal(l) => literal(l)
            .ok()
            .and_then(|(f, _)| f(&[]).ok())
            .map(V::into_value),
        _ => None,
    };
    match (field(x), lit(y), field(y), lit(x)) {
        (Some((vi, fi)), Some(l), _, _) | (_, _, Some((vi, fi)), Some(l)) => Some((vi, fi, l)),
        _ => None,
    }
}

fn check_bool(op: &str, t: Type) -> Result<(), String> {
    match t {
        Type::Bool | Type::Any => Ok(()),
        other => Err(format!(
            "`{}` needs bool operands, got a {other:?}",
            op.trim_matches('_')
        )),
    }
}

fn check_str(op: &str, t: Type) -> Result<(), String> {
    match t {
        Type::String | Type::Any => Ok(()),
        other => Err(format!("`{op}` needs a string, got a {other:?}")),
    }
}

fn comparable(a: Type, b: Type) -> bool {
    use Type::*;
    matches!(
        (a, b),
        (Any, _) | (_, Any) | (Int | Double, Int | Double) | (String, String) | (Bool, Bool)
    )
}

fn arith(name: &str, x: &IdedExpr, y: &IdedExpr, scope: &Scope) -> Result<(F, Type), String> {
    use cel::common::ast::operators as op;
    let (a, ta) = node(x, scope)?;
    let (b, tb) = node(y, scope)?;
    let sym = match name {
        op::ADD => "+",
        op::SUBSTRACT => "-",
        op::MULTIPLY => "*",
        op::DIVIDE => "/",
        _ => "%",
    };
    let ty = match (ta, tb) {
        (Type::Any, t) | (t, Type::Any) => {
            if t == Type::Bool {
                return Err(format!("`{sym}` does not apply to bool"));
            }
            Type::Any
        }
        (Type::Int, Type::Int) => Type::Int,
        (Type::Double, Type::Double) if sym != "%" => Type::Double,
        (Type::String, Type::String) if sym == "+" => Type::String,
        (l, r) => {
            return Err(format!(
                "no `{sym}` for {l:?} and {r:?} (CEL does not mix int and double: convert with double() or int())"
            ));
        }
    };
    let f: F = match sym {
        "+" => Box::new(move |rows: &[&[Value]]| match (a(rows)?, b(rows)?) {
            (V::Int(l), V::Int(r)) => l
                .checked_add(r)
                .map(V::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            (V::Double(l), V::Double(r)) => Ok(V::Double(l + r)),
            (l, r) => match (l.str(), r.str()) {
                (Some(ls), Some(rs)) => {
                    let mut o = CompactString::with_capacity(ls.len() + rs.len());
                    o.push_str(ls);
                    o.push_str(rs);
                    Ok(V::Owned(o))
                }
                _ => Err(EvalError::no_overload("+", &l, &r)),
            },
        }),
        "-" => Box::new(move |rows: &[&[Value]]| match (a(rows)?, b(rows)?) {
            (V::Int(l), V::Int(r)) => l
                .checked_sub(r)
                .map(V::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            (V::Double(l), V::Double(r)) => Ok(V::Double(l - r)),
            (l, r) => Err(EvalError::no_overload("-", &l, &r)),
        }),
        "*" => Box::new(move |rows: &[&[Value]]| match (a(rows)?, b(rows)?) {
            (V::Int(l), V::Int(r)) => l
                .checked_mul(r)
                .map(V::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            (V::Double(l), V::Double(r)) => Ok(V::Double(l * r)),
            (l, r) => Err(EvalError::no_overload("*", &l, &r)),
        }),
        "/" => Box::new(move |rows: &[&[Value]]| match (a(rows)?, b(rows)?) {
            (V::Int(_), V::Int(0)) => Err(EvalError::new("division by zero")),
            (V::Int(l), V::Int(r)) => l
                .checked_div(r)
                .map(V::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            (V::Double(l), V::Double(r)) => Ok(V::Double(l / r)),
            (l, r) => Err(EvalError::no_overload("/", &l, &r)),
        }),
        _ => Box::new(move |rows: &[&[Value]]| match (a(rows)?, b(rows)?) {
            (V::Int(_), V::Int(0)) => Err(EvalError::new("modulus by zero")),
            (V::Int(l), V::Int(r)) => l
                .checked_rem(r)
                .map(V::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            (l, r) => Err(EvalError::no_overload("%", &l, &r)),
        }),
    };
    Ok((f, ty))
}

/// CEL equality: numbers compare by value across int and double; other types never equal.
pub(crate) fn eq_v(a: &V<'_>, b: &V<'_>) -> bool {
    match (a, b) {
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Int(x), V::Int(y)) => x == y,
        (V::Double(x), V::Double(y)) => x == y,
        (V::Int(x), V::Double(y)) | (V::Double(y), V::Int(x)) => (*x as f64) == *y,
        _ => match (a.str(), b.str()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// CEL ordering; `None` for NaN, an error for types that have no order between them.
pub(crate) fn cmp_v(a: &V<'_>, b: &V<'_>) -> Result<Option<Ordering>, EvalError> {
    Ok(match (a, b) {
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y),
        (V::Int(x), V::Double(y)) => (*x as f64).partial_cmp(y),
        (V::Double(x), V::Int(y)) => x.partial_cmp(&(*y as f64)),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        (V::Null, V::Null) => Some(Ordering::Equal),
        _ => match (a.str(), b.str()) {
            (Some(x), Some(y)) => Some(x.cmp(y)),
            _ => return Err(EvalError::no_overload("<", a, b)),
        },
    })
}
