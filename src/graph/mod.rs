//! The ground floor of the pipeline: the computation graph (CG) of atomic ops.
//!
//! ONNX files (`onnx/`) and benchmark specs (`spaces/`) become a [`Cg`]; features, proxies and
//! the predictor read it. A CG is a `petgraph` `StableDiGraph` whose nodes are [`OpNode`]s (an
//! [`OpKind`] with attributes, shapes, parameter and FLOP counts) and whose edges are the
//! tensors flowing between them ([`TensorEdge`], with their shapes). Nodes are kept in a
//! deterministic topological order, so the same network always gives the same bytes out.

mod canon;
mod export;
mod foreign;
mod fuse;
mod node;
mod op;
mod opsets;
mod same;
mod unfold;

pub use canon::fnv1a;
pub use export::{to_dot, CgJson, EdgeJson, NodeJson, CG_SCHEMA_VERSION};
pub use node::{AttrValue, Attrs, ConstValue, OpNode, Operand};
pub use op::{OpKind, ALL_KINDS};
pub use opsets::window_reach;
pub use unfold::{bias_origin, BiasOrigin};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::NodeIndexable;
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tensor shape with every dimension concrete.
pub type Shape = Vec<usize>;

/// A tensor flowing from one node's output to another node's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEdge {
    /// Which output of the source node.
    pub src_slot: usize,
    /// Which activation input of the destination node.
    pub dst_slot: usize,
    /// The tensor's shape.
    pub shape: Shape,
    /// The tensor's name in the source file.
    pub name: String,
}

/// A computation graph of atomic ops, in deterministic topological order.
#[derive(Debug, Clone, Default)]
pub struct Cg {
    /// The graph. Node indices follow topological order once [`Cg::sort`] has run.
    pub graph: StableDiGraph<OpNode, TensorEdge>,
    /// Where it came from (a file path or a spec), for messages.
    pub source: String,
    /// What the reader could not decide for sure (e.g. graph inputs taken as weights by their
    /// use): shown as warnings and in `inspect --json`.
    pub notes: Vec<String>,
    /// Parameters counted that may be another parameter used again (Identity copies of a
    /// weight whose values the file does not hold, or holds all equal): the true count lies in
    /// [`params - undecided_params`, `params`]. 0 when every parameter is decided.
    pub undecided_params: u64,
}

/// A reason a graph is not a valid CG. (Large, but only ever built once, on the error path.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgInvalid {
    /// The graph has a cycle through the named node.
    #[error("the graph has a cycle through node '{0}'")]
    Cycle(String),
    /// No Input node.
    #[error("the graph has no input")]
    NoInput,
    /// No Output node.
    #[error("the graph has no output")]
    NoOutput,
    /// A node that no input reaches.
    #[error("node {index} '{name}' ({op}) is not reached from any input")]
    Unreached {
        /// Topological index.
        index: usize,
        /// Node name.
        name: String,
        /// Op kind.
        op: String,
    },
    /// An edge's shape disagrees with its source node's output shape.
    #[error("edge '{edge}' into node {index} '{name}' ({op}) has shape {got:?}, its producer says {want:?}")]
    ShapeMismatch {
        /// Tensor name.
        edge: String,
        /// Destination topological index.
        index: usize,
        /// Destination name.
        name: String,
        /// Destination op.
        op: String,
        /// The edge's shape.
        got: Shape,
        /// The producer's output shape.
        want: Shape,
    },
}

/// Totals and extremes of a CG, as `nape inspect` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Node count.
    pub nodes: usize,
    /// Edge count.
    pub edges: usize,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates.
    pub macs: u64,
    /// The part of `macs` whose shapes are upper bounds ([`OpNode::bounded`]); 0 when every
    /// shape is exact.
    pub bounded_macs: u64,
    /// The part of `params` that may be another parameter used again ([`Cg::undecided_params`]).
    pub undecided_params: u64,
    /// FLOPs (2 per MAC plus elementwise work).
    pub flops: u64,
    /// Longest input-to-output path, counted in compute nodes (Input, Output and pure
    /// shape ops excluded).
    pub depth: usize,
    /// The largest channel count of any node's output (dimension 1 of a rank >= 2 tensor).
    pub max_channels: usize,
    /// The largest activation tensor, in elements, and the node producing it.
    pub max_activation: (u64, String),
    /// Node count by kind.
    pub by_kind: BTreeMap<String, usize>,
    /// Op types that are `Unknown`, with counts.
    pub unknown: BTreeMap<String, usize>,
}

impl Cg {
    /// An empty graph labelled with its source.
    pub fn new(source: impl Into<String>) -> Cg {
        Cg {
            graph: StableDiGraph::new(),
            source: source.into(),
            notes: Vec::new(),
            undecided_params: 0,
        }
    }

    /// Nodes in topological order (index order after [`Cg::sort`]).
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &OpNode)> {
        self.graph.node_indices().map(move |i| (i, &self.graph[i]))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The node `n` reads, when it reads one tensor through one edge.
    pub(crate) fn single_producer(&self, n: NodeIndex) -> Option<NodeIndex> {
        let mut ins = self.graph.neighbors_directed(n, Direction::Incoming);
        match (ins.next(), ins.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }

    /// The node reading `n`, when one node reads it through one edge.
    pub(crate) fn single_consumer(&self, n: NodeIndex) -> Option<NodeIndex> {
        let mut outs = self.graph.neighbors_directed(n, Direction::Outgoing);
        match (outs.next(), outs.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }

    /// Predecessors of `n` ordered by destination slot.
    pub fn inputs_of(&self, n: NodeIndex) -> Vec<(NodeIndex, &TensorEdge)> {
        let mut v: Vec<_> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                use petgraph::visit::EdgeRef;
                (e.source(), e.weight())
            })
            .collect();
        v.sort_by_key(|(s, e)| (e.dst_slot, s.index()));
        v
    }

    /// Successors of `n`, ordered by (source slot, destination index).
    pub fn outputs_of(&self, n: NodeIndex) -> Vec<(NodeIndex, &TensorEdge)> {
        let mut v: Vec<_> = self
            .graph
            .edges_directed(n, Direction::Outgoing)
            .map(|e| {
                use petgraph::visit::EdgeRef;
                (e.target(), e.weight())
            })
            .collect();
        v.sort_by_key(|(t, e)| (e.src_slot, t.index(), e.dst_slot));
        v
    }

    /// Rebuilds the graph so node indices follow a deterministic topological order: Kahn's
    /// algorithm that always takes the ready node with the smallest (name, original index),
    /// ops before inputs when both are ready. Errors on a cycle.
    #[allow(clippy::result_large_err)] // the error is built once, on the failure path
    pub fn sort(&mut self) -> Result<(), CgInvalid> {
        let order = self.topo_order()?;
        let g = &self.graph;
        let mut map = vec![NodeIndex::end(); g.node_bound()];
        for (i, &n) in order.iter().enumerate() {
            map[n.index()] = NodeIndex::new(i);
        }
        let map = |n: NodeIndex| map[n.index()];
        let mut edges: Vec<_> = g
            .edge_indices()
            .filter_map(|e| g.edge_endpoints(e).map(|(s, t)| (map(t), g[e].dst_slot, map(s), e)))
            .collect();
        edges.sort_by_key(|(t, slot, s, _)| (t.index(), *slot, s.index()));
        // move the nodes and edges over (no clone): edges first, while their indices hold
        let mut old = std::mem::take(&mut self.graph);
        let weights: Vec<(NodeIndex, NodeIndex, TensorEdge)> = edges
            .into_iter()
            .filter_map(|(t, _, s, e)| old.remove_edge(e).map(|w| (s, t, w)))
            .collect();
        let mut new = StableDiGraph::with_capacity(order.len(), weights.len());
        for &n in &order {
            new.add_node(old.remove_node(n).expect("node of this graph"));
        }
        for (s, t, w) in weights {
            new.add_edge(s, t, w);
        }
        self.graph = new;
        Ok(())
    }

    /// The nodes in the order `sort` gives them (Kahn's algorithm, the smallest key first).
    #[allow(clippy::result_large_err)] // the error is built once, on the failure path
    fn topo_order(&self) -> Result<Vec<NodeIndex>, CgInvalid> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let g = &self.graph;
        let mut indeg = vec![0usize; g.node_bound()];
        for e in g.edge_indices() {
            if let Some((_, t)) = g.edge_endpoints(e) {
                indeg[t.index()] += 1;
            }
        }
        // the smallest key first (the order every golden file was written in)
        let key = |n: NodeIndex| {
            Reverse((Reverse(g[n].kind != OpKind::Input), g[n].name.as_str(), n.index()))
        };
        let mut ready: BinaryHeap<_> =
            g.node_indices().filter(|n| indeg[n.index()] == 0).map(key).collect();
        let mut order = Vec::with_capacity(g.node_count());
        while let Some(Reverse((_, _, idx))) = ready.pop() {
            let n = NodeIndex::new(idx);
            order.push(n);
            for t in g.neighbors_directed(n, Direction::Outgoing) {
                // neighbors_directed yields a target once per parallel edge
                indeg[t.index()] -= 1;
                if indeg[t.index()] == 0 {
                    ready.push(key(t));
                }
            }
        }
        if order.len() != g.node_count() {
            let stuck = g
                .node_indices()
                .find(|n| !order.contains(n))
                .map(|n| g[n].name.clone())
                .unwrap_or_default();
            return Err(CgInvalid::Cycle(stuck));
        }
        Ok(order)
    }

    /// Checks the invariants every CG must hold: acyclic, at least one input and output, every
    /// node reached from an input, and every edge's shape equal to its producer's output shape.
    #[allow(clippy::result_large_err)] // the error is built once, on the failure path
    pub fn validate(&self) -> Result<(), CgInvalid> {
        let g = &self.graph;
        if petgraph::algo::is_cyclic_directed(g) {
            let name = g.node_indices().next().map(|n| g[n].name.clone()).unwrap_or_default();
            return Err(CgInvalid::Cycle(name));
        }
        let inputs: Vec<_> = g.node_indices().filter(|&n| g[n].kind == OpKind::Input).collect();
        if inputs.is_empty() {
            return Err(CgInvalid::NoInput);
        }
        if !g.node_indices().any(|n| g[n].kind == OpKind::Output) {
            return Err(CgInvalid::NoOutput);
        }
        let mut reached = vec![false; g.node_bound()];
        let mut stack = inputs.clone();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut reached[n.index()], true) {
                continue;
            }
            stack.extend(g.neighbors_directed(n, Direction::Outgoing));
        }
        for (pos, n) in g.node_indices().enumerate() {
            let node = &g[n];
            if !reached[n.index()] {
                return Err(CgInvalid::Unreached {
                    index: pos,
                    name: node.name.clone(),
                    op: node.kind.to_string(),
                });
            }
            for (src, e) in self.inputs_of(n) {
                let want = g[src].out_shapes.get(e.src_slot).cloned().unwrap_or_default();
                if want != e.shape {
                    return Err(CgInvalid::ShapeMismatch {
                        edge: e.name.clone(),
                        index: pos,
                        name: node.name.clone(),
                        op: node.kind.to_string(),
                        got: e.shape.clone(),
                        want,
                    });
                }
            }
        }
        Ok(())
    }

    /// The batch the graph's shapes were made for: its first input's first dimension (1 when
    /// the graph has no input or the input has no dimensions).
    pub fn batch(&self) -> usize {
        self.graph
            .node_weights()
            .find(|n| n.kind == OpKind::Input)
            .and_then(|n| n.out_shape().first().copied())
            .unwrap_or(1)
    }

    /// Elements of every node's outputs together (the activations one run of the graph makes).
    pub fn output_elements(&self) -> u64 {
        let shapes = self.graph.node_weights().flat_map(|n| &n.out_shapes);
        shapes.map(|s| s.iter().map(|&d| d.max(1) as u64).product::<u64>()).sum()
    }

    /// Totals, depth and extremes of the graph.
    pub fn summary(&self) -> Summary {
        let g = &self.graph;
        let mut by_kind = BTreeMap::new();
        let mut unknown = BTreeMap::new();
        let (mut params, mut macs, mut flops, mut bounded_macs) = (0u64, 0u64, 0u64, 0u64);
        let mut max_channels = 0;
        let mut max_activation = (0u64, String::new());
        let mut depth_at = vec![0usize; g.node_bound()];
        let mut depth = 0;
        for n in g.node_indices() {
            let node = &g[n];
            *by_kind.entry(node.kind.as_str().to_string()).or_insert(0) += 1;
            if node.kind.is_unknown() {
                *unknown.entry(node.kind.as_str().to_string()).or_insert(0) += 1;
            }
            params += node.params;
            macs += node.macs;
            flops += node.flops;
            if node.bounded {
                bounded_macs += node.macs;
            }
            for s in &node.out_shapes {
                if s.len() >= 2 {
                    max_channels = max_channels.max(s[1]);
                }
                let elems: u64 = s.iter().map(|&d| d as u64).product();
                if node.kind != OpKind::Input && elems > max_activation.0 {
                    max_activation = (elems, node.name.clone());
                }
            }
            let counts =
                !matches!(node.kind, OpKind::Input | OpKind::Output) && !node.kind.is_shape_op();
            let before =
                g.neighbors_directed(n, Direction::Incoming).map(|p| depth_at[p.index()]).max();
            depth_at[n.index()] = before.unwrap_or(0) + usize::from(counts);
            depth = depth.max(depth_at[n.index()]);
        }
        Summary {
            nodes: g.node_count(),
            edges: g.edge_count(),
            params,
            macs,
            bounded_macs,
            undecided_params: self.undecided_params,
            flops,
            depth,
            max_channels,
            max_activation,
            by_kind,
            unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn chain(kinds: &[OpKind]) -> Cg {
        let mut cg = Cg::new("test");
        let mut prev: Option<NodeIndex> = None;
        for (i, k) in kinds.iter().enumerate() {
            let mut node = OpNode::new(k.clone(), format!("n{i}"));
            node.out_shapes = if *k == OpKind::Output { vec![] } else { vec![vec![1, 4, 8, 8]] };
            if prev.is_some() {
                node.in_shapes = vec![vec![1, 4, 8, 8]];
            }
            let n = cg.graph.add_node(node);
            if let Some(p) = prev {
                cg.graph.add_edge(
                    p,
                    n,
                    TensorEdge {
                        src_slot: 0,
                        dst_slot: 0,
                        shape: vec![1, 4, 8, 8],
                        name: format!("t{i}"),
                    },
                );
            }
            prev = Some(n);
        }
        cg
    }

    #[test]
    fn chain_is_valid_and_depth_counts_compute_nodes() {
        let mut cg =
            chain(&[OpKind::Input, OpKind::Conv, OpKind::Relu, OpKind::Reshape, OpKind::Output]);
        cg.sort().unwrap();
        cg.validate().unwrap();
        let s = cg.summary();
        assert_eq!(s.depth, 2);
        assert_eq!(s.nodes, 5);
        assert_eq!(s.max_channels, 4);
    }

    #[test]
    fn shape_mismatch_is_reported_with_node() {
        let mut cg = chain(&[OpKind::Input, OpKind::Relu, OpKind::Output]);
        let e = cg.graph.edge_indices().next().unwrap();
        cg.graph[e].shape = vec![1, 2];
        let err = cg.validate().unwrap_err();
        assert!(err.to_string().contains("n1"), "{err}");
    }

    #[test]
    fn cycle_is_an_error() {
        let mut cg = chain(&[OpKind::Input, OpKind::Relu, OpKind::Relu, OpKind::Output]);
        let ids: Vec<_> = cg.graph.node_indices().collect();
        cg.graph.add_edge(
            ids[2],
            ids[1],
            TensorEdge { src_slot: 0, dst_slot: 1, shape: vec![1, 4, 8, 8], name: "back".into() },
        );
        assert!(matches!(cg.sort(), Err(CgInvalid::Cycle(_))));
        assert!(matches!(cg.validate(), Err(CgInvalid::Cycle(_))));
    }

    #[test]
    fn sort_is_deterministic_regardless_of_insertion_order() {
        // diamond: in -> a, in -> b, a+b -> add -> out ; insert b before a
        let build = |swap: bool| {
            let mut cg = Cg::new("d");
            let mk = |k: OpKind, name: &str| {
                let mut n = OpNode::new(k, name);
                n.out_shapes = vec![vec![1, 2]];
                n
            };
            let i = cg.graph.add_node(mk(OpKind::Input, "in"));
            let (a, b) = if swap {
                let b = cg.graph.add_node(mk(OpKind::Relu, "b"));
                (cg.graph.add_node(mk(OpKind::Relu, "a")), b)
            } else {
                let a = cg.graph.add_node(mk(OpKind::Relu, "a"));
                (a, cg.graph.add_node(mk(OpKind::Relu, "b")))
            };
            let add = cg.graph.add_node(mk(OpKind::Add, "add"));
            let e = |s: usize| TensorEdge {
                src_slot: 0,
                dst_slot: s,
                shape: vec![1, 2],
                name: String::new(),
            };
            cg.graph.add_edge(i, a, e(0));
            cg.graph.add_edge(i, b, e(0));
            cg.graph.add_edge(a, add, e(0));
            cg.graph.add_edge(b, add, e(1));
            cg.sort().unwrap();
            cg.nodes().map(|(_, n)| n.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(build(false), build(true));
        assert_eq!(build(false), vec!["in", "a", "b", "add"]);
    }
}
