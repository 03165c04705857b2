//! Projection push-down: each source produces only the fields its consumers read, so
//! generators skip building unused strings and the file source skips decoding unused values
//! (`validate` then narrows such a source's records to those fields). Anything that passes whole records on (sinks, late outputs, `top`) needs all
//! fields.

use crate::job::graph::{Graph, NodeId, NodeKind};
use std::collections::HashMap;

/// Sets `projection` on every source whose consumers read only some of its fields.
pub(super) fn push_down(graph: &mut Graph) {
    let mut memo = HashMap::new();
    let sources: Vec<NodeId> = (0..graph.nodes.len())
        .filter(|&i| matches!(graph.nodes[i].kind, NodeKind::Source(_)))
        .collect();
    for id in sources {
        let mut mask = required(graph, id, &mut memo);
        let node = &mut graph.nodes[id];
        if let NodeKind::Source(spec) = &mut node.kind {
            if spec.narrowed {
                // Already cut to what its consumers read (see `validate`).
                continue;
            }
            // The time field is read whatever the mask says (and dropped after, unless
            // something downstream reads it: `sources::narrowed`); a source none of whose fields
            // is read keeps it, as its records would otherwise have no fields at all.
            if let crate::connectors::TimeField::Field(f) = spec.time
                && !mask.iter().any(|m| *m)
            {
                mask[f] = true;
            }
            spec.projection = (!mask.iter().all(|m| *m)).then(|| mask.into());
        }
    }
}

/// Fields of `id`'s main output that some consumer reads.
fn required(graph: &Graph, id: NodeId, memo: &mut HashMap<NodeId, Vec<bool>>) -> Vec<bool> {
    if let Some(m) = memo.get(&id) {
        return m.clone();
    }
    let mut mask = vec![false; graph.nodes[id].schema.len()];
    for (c, port) in graph.consumers(id) {
        if graph.nodes[c].inputs[port].late {
            continue;
        }
        for (m, n) in mask.iter_mut().zip(input_needs(graph, c, port, memo)) {
            *m |= n;
        }
    }
    memo.insert(id, mask.clone());
    mask
}

/// Fields of input `port` of node `c` that it (or what it passes them to) reads.
fn input_needs(
    graph: &Graph,
    c: NodeId,
    port: usize,
    memo: &mut HashMap<NodeId, Vec<bool>>,
) -> Vec<bool> {
    let node = &graph.nodes[c];
    let from = node.inputs[port].from;
    let n = graph.nodes[from].schema_for(node.inputs[port].late).len();
    let all = vec![true; n];
    let has_late = graph.has_late_consumer(c);
    let mut mask = vec![false; n];
    let mut mark = |refs: &[(usize, usize)], var: usize| {
        for &(v, f) in refs {
            if v == var && f < n {
                mask[f] = true;
            }
        }
    };
    match &node.kind {
        NodeKind::Sink(_) | NodeKind::Late | NodeKind::Top(_) | NodeKind::Source(_) => return all,
        NodeKind::Filter(p) => {
            mark(&p.refs, 0);
            let out = required(graph, c, memo);
            return mask.iter().zip(out).map(|(a, b)| *a || b).collect();
        }
        NodeKind::Split(s) => {
            mark(&s.0.refs, 0);
            let out = required(graph, c, memo);
            return mask.iter().zip(out).map(|(a, b)| *a || b).collect();
        }
        NodeKind::Map(exprs) => exprs.iter().for_each(|e| mark(&e.refs, 0)),
        NodeKind::Window(w) => {
            if has_late {
                return all;
            }
            w.key.iter().for_each(|e| mark(&e.refs, 0));
            w.aggs
                .iter()
                .filter_map(|a| a.arg.as_ref())
                .for_each(|e| mark(&e.refs, 0));
        }
        NodeKind::Join(j) => {
            if has_late {
                return all;
            }
            mark(
                if port == 0 {
                    &j.left_key.refs
                } else {
                    &j.right_key.refs
                },
                0,
            );
            j.select.iter().for_each(|e| mark(&e.refs, port));
        }
    }
    mask
}
