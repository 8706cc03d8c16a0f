//! JSON and Graphviz DOT views of a [`Cg`]. The JSON document is the `nape inspect --json`
//! contract and the golden-file format; it is versioned by [`CG_SCHEMA_VERSION`].

use super::{Attrs, Cg, OpKind, Shape};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Version of the CG JSON layout; bumped when a field changes meaning or is removed.
pub const CG_SCHEMA_VERSION: u32 = 1;

/// One node of the JSON view. `id` is the node's position in topological order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeJson {
    /// Topological position.
    pub id: usize,
    /// Op kind.
    pub kind: OpKind,
    /// Source name.
    pub name: String,
    /// ONNX op type it came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub onnx_op: String,
    /// Ids of the nodes feeding it, in input-slot order.
    pub inputs: Vec<usize>,
    /// Activation input shapes.
    pub in_shapes: Vec<Shape>,
    /// First output's shape.
    pub out_shape: Shape,
    /// All output shapes, when there is more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_shapes: Vec<Shape>,
    /// Trainable parameters owned.
    pub params: u64,
    /// Multiply-accumulates.
    pub macs: u64,
    /// FLOPs.
    pub flops: u64,
    /// Its shapes and costs are upper bounds ([`super::OpNode::bounded`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounded: bool,
    /// Attributes.
    #[serde(flatten)]
    pub attrs: Attrs,
}

/// One edge of the JSON view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeJson {
    /// Producer id.
    pub from: usize,
    /// Consumer id.
    pub to: usize,
    /// Producer output slot.
    pub src_slot: usize,
    /// Consumer input slot.
    pub dst_slot: usize,
    /// Tensor shape.
    pub shape: Shape,
    /// Tensor name.
    pub tensor: String,
}

/// The whole JSON document for one graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgJson {
    /// Layout version.
    pub schema_version: u32,
    /// Where it came from.
    pub source: String,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates.
    pub macs: u64,
    /// FLOPs.
    pub flops: u64,
    /// Longest compute path.
    pub depth: usize,
    /// Nodes in topological order.
    pub nodes: Vec<NodeJson>,
    /// Edges sorted by (to, dst_slot, from).
    pub edges: Vec<EdgeJson>,
}

impl Cg {
    /// The JSON view of this graph.
    pub fn to_json(&self) -> CgJson {
        let g = &self.graph;
        let pos: std::collections::HashMap<_, _> =
            g.node_indices().enumerate().map(|(i, n)| (n, i)).collect();
        let nodes = g
            .node_indices()
            .map(|n| {
                let node = &g[n];
                NodeJson {
                    id: pos[&n],
                    kind: node.kind.clone(),
                    name: node.name.clone(),
                    onnx_op: node.onnx_op.clone(),
                    inputs: self.inputs_of(n).iter().map(|(s, _)| pos[s]).collect(),
                    in_shapes: node.in_shapes.clone(),
                    out_shape: node.out_shape().to_vec(),
                    out_shapes: if node.out_shapes.len() > 1 {
                        node.out_shapes.clone()
                    } else {
                        Vec::new()
                    },
                    params: node.params,
                    macs: node.macs,
                    flops: node.flops,
                    bounded: node.bounded,
                    attrs: node.attrs.clone(),
                }
            })
            .collect();
        let mut edges: Vec<EdgeJson> = g
            .edge_indices()
            .filter_map(|e| {
                let (s, t) = g.edge_endpoints(e)?;
                let w = &g[e];
                Some(EdgeJson {
                    from: pos[&s],
                    to: pos[&t],
                    src_slot: w.src_slot,
                    dst_slot: w.dst_slot,
                    shape: w.shape.clone(),
                    tensor: w.name.clone(),
                })
            })
            .collect();
        edges.sort_by_key(|e| (e.to, e.dst_slot, e.from));
        let s = self.summary();
        CgJson {
            schema_version: CG_SCHEMA_VERSION,
            source: self.source.clone(),
            params: s.params,
            macs: s.macs,
            flops: s.flops,
            depth: s.depth,
            nodes,
            edges,
        }
    }
}

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// Graphviz DOT text for a graph: one box per node labelled with kind, kernel/stride and output
/// shape; edges labelled with tensor shapes.
pub fn to_dot(cg: &Cg) -> String {
    let g = &cg.graph;
    let mut out =
        String::from("digraph cg {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
    let pos: std::collections::HashMap<_, _> =
        g.node_indices().enumerate().map(|(i, n)| (n, i)).collect();
    for n in g.node_indices() {
        let node = &g[n];
        let mut label = node.kind.to_string();
        if !node.attrs.kernel.is_empty() {
            let _ = write!(label, " k{}", dims(&node.attrs.kernel));
        }
        if node.attrs.stride.iter().any(|&s| s != 1) {
            let _ = write!(label, " s{}", dims(&node.attrs.stride));
        }
        if let Some(gr) = node.attrs.groups.filter(|&g| g > 1) {
            let _ = write!(label, " g{gr}");
        }
        if !node.out_shape().is_empty() {
            let _ = write!(label, "\\n{}", dims(node.out_shape()));
        }
        let style = if node.kind.is_unknown() { ", color=red" } else { "" };
        let _ = writeln!(out, "  n{} [label=\"{}\"{}];", pos[&n], label.replace('"', "'"), style);
    }
    let mut edges: Vec<_> = g
        .edge_indices()
        .filter_map(|e| g.edge_endpoints(e).map(|(s, t)| (pos[&s], pos[&t], dims(&g[e].shape))))
        .collect();
    edges.sort();
    for (s, t, shape) in edges {
        let _ = writeln!(out, "  n{s} -> n{t} [label=\"{shape}\"];");
    }
    out.push_str("}\n");
    out
}
