//! The graph: unknown ids, roles of edges, cycles, data that reaches no sink, and the
//! execution order.

use super::Checker;
use super::nodes::a_kind;
use crate::de::Spanned;
use crate::diag::suggest;
use crate::load::Loaded;
use crate::plan::EdgeKind;
use crate::spec::PipelineSpec;
use crate::spec::nodes::Role;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeSet, HashMap};

pub(super) struct Graph<'s> {
    graph: DiGraph<&'s str, EdgeKind>,
    index: HashMap<&'s str, NodeIndex>,
    /// The reference that made each edge (for positions).
    refs: HashMap<(NodeIndex, NodeIndex), &'s Spanned<String>>,
}

impl Checker<'_> {
    /// Reference, role and cycle checks. Returns the graph of the nodes that were read.
    pub(super) fn graph<'s>(&mut self, spec: &'s PipelineSpec, loaded: &Loaded) -> Graph<'s> {
        let mut g = Graph {
            graph: DiGraph::new(),
            index: HashMap::new(),
            refs: HashMap::new(),
        };
        for n in spec.nodes.iter() {
            let i = g.graph.add_node(n.id.value.as_str());
            g.index.insert(n.id.value.as_str(), i);
        }
        let ids: Vec<&str> = loaded.all_ids.iter().map(String::as_str).collect();
        for n in spec.nodes.iter() {
            let me = g.index[n.id.value.as_str()];
            let role = n.kind.role();
            let clean = loaded.clean.contains(&n.id.value);
            for (list, kind) in [
                (&n.common.inputs, EdgeKind::Data),
                (&n.common.after, EdgeKind::Order),
            ] {
                let field = if kind == EdgeKind::Data {
                    "inputs"
                } else {
                    "after"
                };
                let mut seen = BTreeSet::new();
                for r in list {
                    if r.value == n.id.value {
                        self.error_at(
                            r,
                            format!("`{}` lists itself in `{field}`", r.value),
                            "a node cannot depend on itself",
                        );
                        continue;
                    }
                    if !seen.insert(r.value.as_str()) {
                        self.error_at(
                            r,
                            format!("`{}` is listed twice in `{field}`", r.value),
                            "remove the second one",
                        );
                        continue;
                    }
                    if kind == EdgeKind::Order && n.common.inputs.iter().any(|i| i.value == r.value)
                    {
                        self.error_at(
                            r,
                            format!("`{}` is already an input of `{}`", r.value, n.id.value),
                            "an input also orders the nodes: remove it from `after`",
                        );
                        continue;
                    }
                    let Some(&other) = g.index.get(r.value.as_str()) else {
                        if !loaded.all_ids.contains(&r.value) {
                            let help = match suggest(&r.value, ids.iter().copied()) {
                                Some(near) => format!("did you mean `{near}`?"),
                                None => format!("the nodes are: {}", ids.join(", ")),
                            };
                            self.error_at(
                                r,
                                format!("unknown node `{}` in `{field}`", r.value),
                                help,
                            );
                        }
                        continue;
                    };
                    if kind == EdgeKind::Data {
                        let other_spec = spec.nodes.get(&r.value);
                        if let Some(o) = other_spec.filter(|o| !o.kind.role().produces_data()) {
                            self.error_at(
                                r,
                                format!(
                                    "`{}` is {}: it produces no data to read",
                                    r.value,
                                    a_kind(o)
                                ),
                                format!(
                                    "to run after it without reading data, use `after: [{}]`",
                                    r.value
                                ),
                            );
                            continue;
                        }
                    }
                    g.graph.add_edge(other, me, kind);
                    g.refs.insert((other, me), r);
                }
            }
            if let Some(first) = n.common.inputs.first() {
                if matches!(role, Role::Source | Role::Task) {
                    let help = match role {
                        Role::Task => {
                            "a task takes no data; to run it after other nodes use `after: [...]`"
                        }
                        _ => {
                            "a source reads from outside; to start it after another node use `after: [...]`"
                        }
                    };
                    self.error_at(
                        first,
                        format!("`{}` is {}: it takes no `inputs`", n.id.value, a_kind(n)),
                        help,
                    );
                }
            } else if role.consumes_data() && clean {
                self.error_at(
                    &n.id,
                    format!("`{}` is {} but has no `inputs`", n.id.value, a_kind(n)),
                    "add `inputs: [...]` with the nodes whose data it reads",
                );
            }
        }
        self.cycles(&g);
        g
    }

    fn cycles(&mut self, g: &Graph<'_>) {
        for scc in petgraph::algo::tarjan_scc(&g.graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            // Start from the member written first, walk edges inside the component.
            let Some(&start) = members.iter().next() else {
                continue;
            };
            let mut path = vec![start];
            let mut visited = BTreeSet::from([start]);
            let mut current = start;
            let closing = loop {
                let next = g
                    .graph
                    .neighbors(current)
                    .filter(|n| members.contains(n))
                    .min_by_key(|n| (*n != start, n.index()));
                let Some(next) = next else { break None };
                if next == start || visited.contains(&next) {
                    let from = path.iter().position(|p| *p == next).unwrap_or(0);
                    path.drain(..from);
                    break Some((current, next));
                }
                visited.insert(next);
                path.push(next);
                current = next;
            };
            let Some((last, first)) = closing else {
                continue;
            };
            let mut names: Vec<&str> = path.iter().map(|i| g.graph[*i]).collect();
            names.push(g.graph[first]);
            let Some(r) = g.refs.get(&(last, first)) else {
                continue;
            };
            self.error_at(
                r,
                format!("cycle: {}", names.join(" -> ")),
                "a pipeline is a DAG: remove one of these `inputs`/`after` references",
            );
        }
    }

    /// Data from a source or transform must reach a sink.
    pub(super) fn reach_sinks(&mut self, spec: &PipelineSpec, g: &Graph<'_>) {
        let mut reaches: BTreeSet<NodeIndex> = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = spec
            .nodes
            .iter()
            .filter(|n| n.kind.role() == Role::Sink)
            .map(|n| g.index[n.id.value.as_str()])
            .collect();
        while let Some(i) = stack.pop() {
            if !reaches.insert(i) {
                continue;
            }
            for e in g.graph.edges_directed(i, petgraph::Direction::Incoming) {
                if *e.weight() == EdgeKind::Data {
                    stack.push(petgraph::visit::EdgeRef::source(&e));
                }
            }
        }
        for n in spec.nodes.iter() {
            if n.kind.role().produces_data() && !reaches.contains(&g.index[n.id.value.as_str()]) {
                self.error_at(
                    &n.id,
                    format!("the data of `{}` reaches no sink", n.id.value),
                    format!("add a sink with `inputs: [{}]` (or a transform that leads to one), or remove the node", n.id.value),
                );
            }
        }
    }
}

/// Kahn's algorithm, taking ready nodes in file order.
pub(super) fn execution_order(spec: &PipelineSpec, g: &Graph<'_>) -> Vec<(usize, usize)> {
    let n = spec.nodes.0.len();
    let mut indegree: Vec<usize> = (0..n)
        .map(|i| {
            g.graph
                .edges_directed(NodeIndex::new(i), petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut stage = vec![1usize; n];
    let mut ready: BTreeSet<usize> = (0..n).filter(|i| indegree[*i] == 0).collect();
    let mut order = Vec::new();
    while let Some(i) = ready.pop_first() {
        order.push((i, stage[i]));
        for next in g.graph.neighbors(NodeIndex::new(i)) {
            let j = next.index();
            stage[j] = stage[j].max(stage[i] + 1);
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    order
}
