//! Validation of steps: filters, maps, splits, windowed aggregates, top-N and joins.

use super::validate::{Builder, late_output};
use super::{Step, Window};
use crate::expr::{self, Compiled, Scope};
use crate::job::graph::{Input, JoinSpec, Node, NodeId, NodeKind, Route, TopSpec, WindowAggSpec};
use crate::operators::aggregate::{AggKind, AggSpec};
use crate::operators::window::{WindowKind, WindowSpec};
use crate::record::{Schema, Type};
use cel::common::ast::Expr;
use eddy_crds::plan::KeySpec;
use std::sync::Arc;

pub(super) fn window_spec(
    b: &mut Builder<'_>,
    path: &str,
    w: &Window,
    allow_session: bool,
) -> Option<WindowSpec> {
    let set = [
        w.tumbling.is_some(),
        w.sliding.is_some(),
        w.session.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        b.err(path, "set exactly one of `tumbling: 10s`, `sliding: {size: 10s, slide: 2s}` or `session: {gap: 30s}`");
        return None;
    }
    let kind = if let Some(t) = &w.tumbling {
        WindowKind::Tumbling {
            size: b.positive(&format!("{path}.tumbling"), t)?,
        }
    } else if let Some(s) = &w.sliding {
        let size = b.positive(&format!("{path}.sliding.size"), &s.size);
        let slide = b.positive(&format!("{path}.sliding.slide"), &s.slide);
        let (size, slide) = (size?, slide?);
        if slide > size {
            b.err(
                format!("{path}.sliding.slide"),
                "must not be longer than `size` (records would fall between windows)",
            );
            return None;
        }
        WindowKind::Sliding { size, slide }
    } else if let Some(s) = &w.session {
        if !allow_session {
            b.err(
                format!("{path}.session"),
                "joins support tumbling and sliding windows only",
            );
            return None;
        }
        WindowKind::Session {
            gap: b.positive(&format!("{path}.session.gap"), &s.gap)?,
        }
    } else {
        return None;
    };
    let lateness = match &w.allowed_lateness {
        Some(d) => b.duration(&format!("{path}.allowedLateness"), d)?,
        None => 0,
    };
    let processing_time = match w.time.as_deref() {
        None | Some("event") => false,
        Some("processing") => true,
        Some(other) => {
            b.err(
                format!("{path}.time"),
                format!("expected `event` or `processing`, got `{other}`"),
            );
            return None;
        }
    };
    Some(WindowSpec {
        kind,
        lateness,
        processing_time,
    })
}

pub(super) fn key_exprs(
    b: &mut Builder<'_>,
    path: &str,
    k: &KeySpec,
    scope: &Scope,
) -> Option<(Vec<String>, Vec<Compiled>)> {
    let pairs: Vec<(String, String)> = match k {
        KeySpec::One(src) => {
            let name = expr::parse(src)
                .ok()
                .and_then(|e| match e.expr {
                    Expr::Select(s) => Some(s.field.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "key".to_string());
            vec![(name, src.clone())]
        }
        KeySpec::Named(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    if pairs.is_empty() {
        b.err(path, "needs at least one key expression");
        return None;
    }
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    let mut ok = true;
    for (name, src) in pairs {
        let p = match k {
            KeySpec::One(_) => path.to_string(),
            KeySpec::Named(_) => format!("{path}.{name}"),
        };
        match b.compile(&p, &src, scope) {
            Some(c) => {
                names.push(name);
                exprs.push(c);
            }
            None => ok = false,
        }
    }
    ok.then_some((names, exprs))
}

pub(super) fn step(b: &mut Builder<'_>, i: usize, s: &Step) {
    let path = format!("steps[{i}]");
    let kinds = [
        ("filter", s.filter.is_some()),
        ("map", s.map.is_some()),
        ("split", s.split.is_some()),
        ("aggregate", s.aggregate.is_some()),
        ("top", s.top.is_some()),
        ("join", s.join.is_some()),
    ];
    let set: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
    if set.len() != 1 {
        let msg = if set.is_empty() {
            "says nothing to do: set one of `filter`, `map`, `split`, `aggregate` (with `keyBy` and `window`), `top` or `join`".to_string()
        } else {
            format!(
                "sets {}: a step does one thing; split it into several steps",
                set.join(" and ")
            )
        };
        b.err(&path, msg);
        return;
    }
    if s.join.is_some() {
        if s.from.is_some() {
            b.err(
                format!("{path}.from"),
                "a join names its inputs in `join.left.from` and `join.right.from`",
            );
        }
        return join_step(b, &path, s);
    }
    let Some(from) = s.from.as_deref().and_then(|f| b.input(f)) else {
        return;
    };
    let input = b.nodes[from].schema.clone();
    let scope = Scope::event(input.clone());
    if (s.key_by.is_some() || s.window.is_some()) && s.aggregate.is_none() {
        b.err(
            &path,
            "`keyBy` and `window` go with `aggregate`: say what to compute per key and window",
        );
        return;
    }
    let (kind, schema, route, late_schema) = if let Some(f) = &s.filter {
        let Some(c) = b.compile(&format!("{path}.filter"), f, &scope) else {
            return;
        };
        if !matches!(c.ty, Type::Bool | Type::Any) {
            b.err(
                format!("{path}.filter"),
                format!("must be a bool expression, this is a {:?}", c.ty),
            );
            return;
        }
        (
            NodeKind::Filter(Arc::new(c)),
            input.clone(),
            Route::Forward,
            None,
        )
    } else if let Some(m) = &s.map {
        let mut exprs = Vec::new();
        let mut fields = Vec::new();
        for (name, src) in m {
            if let Some(c) = b.compile(&format!("{path}.map.{name}"), src, &scope) {
                fields.push((name.clone(), c.ty));
                exprs.push(c);
            }
        }
        if exprs.len() != m.len() {
            return;
        }
        (
            NodeKind::Map(Arc::new(exprs)),
            Arc::new(Schema::new(fields)),
            Route::Forward,
            None,
        )
    } else if let Some(sp) = &s.split {
        let Some(c) = b.compile(&format!("{path}.split.expr"), &sp.expr, &scope) else {
            return;
        };
        if !matches!(c.ty, Type::String | Type::Any) {
            b.err(
                format!("{path}.split.expr"),
                format!("must be a string expression, this is a {:?}", c.ty),
            );
            return;
        }
        let sep = sp.separator.clone().unwrap_or_else(|| " ".to_string());
        if sep.is_empty() {
            b.err(format!("{path}.split.separator"), "must not be empty");
            return;
        }
        if input.index_of(&sp.as_field).is_some() {
            b.err(
                format!("{path}.split.as"),
                format!(
                    "the input already has a field `{}`: pick another name",
                    sp.as_field
                ),
            );
            return;
        }
        let mut fields: Vec<(String, Type)> = input
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.ty))
            .collect();
        fields.push((sp.as_field.clone(), Type::String));
        (
            NodeKind::Split(Arc::new((c, sep))),
            Arc::new(Schema::new(fields)),
            Route::Forward,
            None,
        )
    } else if let Some(aggs) = &s.aggregate {
        let Some(k) = &s.key_by else {
            b.err(
                format!("{path}.keyBy"),
                "missing: an aggregate needs a key, like `keyBy: event.user`",
            );
            return;
        };
        let Some(w) = &s.window else {
            b.err(
                format!("{path}.window"),
                "missing: an aggregate needs a window, like `window: {tumbling: 1m}`",
            );
            return;
        };
        let window = window_spec(b, &format!("{path}.window"), w, true);
        let keys = key_exprs(b, &format!("{path}.keyBy"), k, &scope);
        let aggs = aggregates(b, &format!("{path}.aggregate"), aggs, &scope);
        let (Some(window), Some((names, key)), Some(aggs)) = (window, keys, aggs) else {
            return;
        };
        let mut fields: Vec<(String, Type)> = names
            .iter()
            .zip(&key)
            .map(|(n, e)| (n.clone(), e.ty))
            .collect();
        fields.push(("window_start".into(), Type::Int));
        fields.push(("window_end".into(), Type::Int));
        for a in &aggs {
            let ty = a
                .kind
                .result_type(a.arg.as_ref().map_or(Type::Int, |e| e.ty));
            fields.push((a.name.clone(), ty));
        }
        if let Some(dup) = duplicate(fields.iter().map(|f| f.0.as_str())) {
            b.err(format!("{path}.aggregate.{dup}"), format!("output field `{dup}` is defined twice (keys, window_start, window_end and aggregates share one record)"));
            return;
        }
        let route_keys: Vec<Compiled> = match k {
            KeySpec::One(src) => vec![expr::compile(src, &scope).ok()]
                .into_iter()
                .flatten()
                .collect(),
            KeySpec::Named(m) => m
                .values()
                .filter_map(|src| expr::compile(src, &scope).ok())
                .collect(),
        };
        let spec = WindowAggSpec { key, window, aggs };
        (
            NodeKind::Window(Arc::new(spec)),
            Arc::new(Schema::new(fields)),
            Route::Key(Arc::new(route_keys)),
            Some(input.clone()),
        )
    } else if let Some(t) = &s.top {
        let (Some(start), Some(end)) =
            (input.index_of("window_start"), input.index_of("window_end"))
        else {
            b.err(
                format!("{path}.from"),
                "`top` ranks window results: its input needs `window_start` and `window_end`; read a windowed aggregate",
            );
            return;
        };
        if t.n == 0 {
            b.err(format!("{path}.top.n"), "must be at least 1");
        }
        if t.order_by.is_empty() {
            b.err(
                format!("{path}.top.orderBy"),
                "needs at least one expression, like `[\"event.count desc\"]`",
            );
        }
        let mut order = Vec::new();
        for (j, o) in t.order_by.iter().enumerate() {
            let trimmed = o.trim();
            let (src, desc) = if let Some(x) = trimmed.strip_suffix(" desc") {
                (x, true)
            } else if let Some(x) = trimmed.strip_suffix(" asc") {
                (x, false)
            } else {
                (trimmed, false)
            };
            if let Some(c) = b.compile(&format!("{path}.top.orderBy[{j}]"), src, &scope) {
                order.push((c, desc));
            }
        }
        if order.len() != t.order_by.len() || t.n == 0 {
            return;
        }
        let route_keys = ["event.window_start", "event.window_end"]
            .iter()
            .filter_map(|s| expr::compile(s, &scope).ok())
            .collect();
        let spec = TopSpec {
            n: t.n as usize,
            order,
            start_field: start,
            end_field: end,
        };
        (
            NodeKind::Top(Arc::new(spec)),
            input.clone(),
            Route::Key(Arc::new(route_keys)),
            None,
        )
    } else {
        return;
    };
    let id = b.add(
        &s.name,
        Node {
            name: s.name.clone(),
            kind,
            schema,
            inputs: vec![Input {
                from,
                late: false,
                route,
            }],
            single: false,
            late_schema: late_schema.clone(),
        },
    );
    if let (Some(late), Some(ls)) = (late_output(s), late_schema) {
        add_late(b, late, id, ls);
    }
}

pub(super) fn add_late(b: &mut Builder<'_>, name: &str, from: NodeId, schema: Arc<Schema>) {
    b.add(
        name,
        Node {
            name: name.to_string(),
            kind: NodeKind::Late,
            schema,
            inputs: vec![Input {
                from,
                late: true,
                route: Route::Forward,
            }],
            single: false,
            late_schema: None,
        },
    );
}

pub(super) fn duplicate<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}

pub(super) fn aggregates(
    b: &mut Builder<'_>,
    path: &str,
    aggs: &indexmap::IndexMap<String, String>,
    scope: &Scope,
) -> Option<Vec<AggSpec>> {
    if aggs.is_empty() {
        b.err(
            path,
            "needs at least one aggregate, like `{clicks: count()}`",
        );
        return None;
    }
    let mut out = Vec::new();
    for (name, src) in aggs {
        let p = format!("{path}.{name}");
        let ast = match expr::parse(src) {
            Ok(a) => a,
            Err(e) => {
                b.err(&p, format!("{e} (in `{src}`)"));
                continue;
            }
        };
        let Expr::Call(call) = &ast.expr else {
            b.err(
                &p,
                format!(
                    "expected an aggregate call like `count()` or `sum(event.x)`; functions: {}",
                    AggKind::NAMES
                ),
            );
            continue;
        };
        let Some(kind) = AggKind::parse(&call.func_name).filter(|_| call.target.is_none()) else {
            b.err(
                &p,
                format!(
                    "unknown aggregate `{}`; use one of: {}",
                    call.func_name,
                    AggKind::NAMES
                ),
            );
            continue;
        };
        let arg = match (kind, call.args.len()) {
            (AggKind::Count, 0) => None,
            (_, 1) => match expr::compile_ast(&call.args[0], scope) {
                Ok(c) => Some(c),
                Err(e) => {
                    b.err(&p, format!("{e} (in `{src}`)"));
                    continue;
                }
            },
            (_, n) => {
                b.err(
                    &p,
                    format!("`{}` takes one argument, got {n}", call.func_name),
                );
                continue;
            }
        };
        if let (AggKind::Sum | AggKind::Avg, Some(a)) = (kind, &arg)
            && !matches!(a.ty, Type::Int | Type::Double | Type::Any)
        {
            b.err(
                &p,
                format!(
                    "`{}` needs a number, `{src}` is a {:?}",
                    call.func_name, a.ty
                ),
            );
            continue;
        }
        out.push(AggSpec {
            name: name.clone(),
            kind,
            arg,
        });
    }
    (out.len() == aggs.len()).then_some(out)
}

pub(super) fn join_step(b: &mut Builder<'_>, path: &str, s: &Step) {
    let Some(j) = &s.join else { return };
    let left = b.input(&j.left.from);
    let right = b.input(&j.right.from);
    let window = window_spec(b, &format!("{path}.join.window"), &j.window, false);
    let (Some(left), Some(right)) = (left, right) else {
        return;
    };
    let ls = b.nodes[left].schema.clone();
    let rs = b.nodes[right].schema.clone();
    let lk = b.compile(
        &format!("{path}.join.left.key"),
        &j.left.key,
        &Scope::event(ls.clone()),
    );
    let rk = b.compile(
        &format!("{path}.join.right.key"),
        &j.right.key,
        &Scope::event(rs.clone()),
    );
    let scope = Scope::join(ls.clone(), rs.clone());
    let mut select = Vec::new();
    let mut fields = vec![
        ("window_start".to_string(), Type::Int),
        ("window_end".to_string(), Type::Int),
    ];
    if j.select.is_empty() {
        b.err(
            format!("{path}.join.select"),
            "name the output fields, like `{user: left.user, ip: right.ip}`",
        );
    }
    for (name, src) in &j.select {
        if let Some(c) = b.compile(&format!("{path}.join.select.{name}"), src, &scope) {
            fields.push((name.clone(), c.ty));
            select.push(c);
        }
    }
    let (Some(window), Some(lk), Some(rk)) = (window, lk, rk) else {
        return;
    };
    if select.len() != j.select.len() {
        return;
    }
    if lk.ty != rk.ty && lk.ty != Type::Any && rk.ty != Type::Any {
        b.err(
            format!("{path}.join.right.key"),
            format!(
                "is a {:?} but the left key is a {:?}: keys must have the same type to match",
                rk.ty, lk.ty
            ),
        );
        return;
    }
    if let Some(dup) = duplicate(fields.iter().map(|f| f.0.as_str())) {
        b.err(
            format!("{path}.join.select.{dup}"),
            format!("output field `{dup}` is defined twice"),
        );
        return;
    }
    let lroute = expr::compile(&j.left.key, &Scope::event(ls.clone())).ok();
    let rroute = expr::compile(&j.right.key, &Scope::event(rs.clone())).ok();
    let (Some(lroute), Some(rroute)) = (lroute, rroute) else {
        return;
    };
    let spec = JoinSpec {
        left_key: lk,
        right_key: rk,
        window,
        select,
    };
    let id = b.add(
        &s.name,
        Node {
            name: s.name.clone(),
            kind: NodeKind::Join(Arc::new(spec)),
            schema: Arc::new(Schema::new(fields)),
            inputs: vec![
                Input {
                    from: left,
                    late: false,
                    route: Route::Key(Arc::new(vec![lroute])),
                },
                Input {
                    from: right,
                    late: false,
                    route: Route::Key(Arc::new(vec![rroute])),
                },
            ],
            single: false,
            late_schema: Some(ls.clone()),
        },
    );
    if let Some(late) = late_output(s) {
        if ls != rs {
            b.err(
                format!("{path}.join.window.lateOutput"),
                "late output of a join needs both inputs to have the same fields",
            );
            return;
        }
        add_late(b, late, id, ls);
    }
}
