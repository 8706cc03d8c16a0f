//! Activation fusion: activations that exporters write as several ONNX nodes become the one
//! atomic op they are. SiLU is `x * sigmoid(x)`, hard-swish `x * hardsigmoid(x)`, and GELU
//! `x * 0.5 * (1 + erf(x / sqrt 2))` (any order of the scalar steps).

use super::{Cg, OpKind, OpNode, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// A pattern to fuse: (x, x's output slot, nodes to replace, fused kind, the last node of
/// the pattern).
type Fusable = (NodeIndex, usize, Vec<NodeIndex>, OpKind, NodeIndex);

impl Cg {
    /// Fuses split activations in place (see the module docs). Returns how many were fused.
    pub fn fuse_activations(&mut self) -> usize {
        let mut fused = 0;
        while let Some((x, slot, members, kind, last)) = self.find_fusable() {
            self.replace_with(x, slot, &members, kind, last);
            fused += 1;
        }
        fused
    }

    fn act_preds(&self, n: NodeIndex) -> Vec<(NodeIndex, usize)> {
        self.inputs_of(n).into_iter().map(|(s, e)| (s, e.src_slot)).collect()
    }

    /// The first pattern to fuse, in node order: a swish or a GELU ([`Fusable`]).
    fn find_fusable(&self) -> Option<Fusable> {
        self.graph.node_indices().find_map(|n| match self.graph[n].kind {
            OpKind::Sigmoid | OpKind::HardSigmoid => self.swish_at(n),
            OpKind::Erf => self.gelu_at(n),
            _ => None,
        })
    }

    /// `x * sigmoid(x)` (or hard sigmoid) with the sigmoid at `n`: SiLU (HardSwish).
    fn swish_at(&self, n: NodeIndex) -> Option<Fusable> {
        let g = &self.graph;
        let [(x, xs)] = self.act_preds(n)[..] else { return None };
        let m = self.single_consumer(n)?;
        if g[m].kind != OpKind::Mul {
            return None;
        }
        let preds = self.act_preds(m);
        if preds.len() != 2 || !preds.contains(&(x, xs)) || !preds.iter().any(|p| p.0 == n) {
            return None;
        }
        let kind = if g[n].kind == OpKind::Sigmoid { OpKind::Silu } else { OpKind::HardSwish };
        Some((x, xs, vec![n, m], kind, m))
    }

    /// The erf form of GELU around the Erf at `n`: `x * (erf(x / sqrt 2) + 1)` with its scalar
    /// steps in any of the exporters' orders, and an optional trailing `* 0.5`.
    fn gelu_at(&self, n: NodeIndex) -> Option<Fusable> {
        let g = &self.graph;
        // backwards: one scalar Mul/Div from x
        let [(p, _)] = self.act_preds(n)[..] else { return None };
        if !matches!(g[p].kind, OpKind::Mul | OpKind::Div) || g[p].params != 0 {
            return None;
        }
        let [(x, xs)] = self.act_preds(p)[..] else { return None };
        if self.single_consumer(p) != Some(n) {
            return None;
        }
        // forwards: scalar Add/Mul steps until the Mul with x
        let mut members = vec![p, n];
        let mut cur = n;
        let mut closed = None;
        for _ in 0..4 {
            let Some(next) = self.single_consumer(cur) else { break };
            let preds = self.act_preds(next);
            let kind = &g[next].kind;
            members.push(next);
            if *kind == OpKind::Mul && preds.len() == 2 && preds.contains(&(x, xs)) {
                closed = Some(next);
                break;
            }
            if !matches!(kind, OpKind::Add | OpKind::Mul) || preds.len() != 1 || g[next].params != 0
            {
                break;
            }
            cur = next;
        }
        let mut last = closed?;
        // an optional trailing scalar Mul (x * erf-part, then * 0.5)
        if let Some(next) = self.single_consumer(last) {
            if g[next].kind == OpKind::Mul && self.act_preds(next).len() == 1 && g[next].params == 0
            {
                members.push(next);
                last = next;
            }
        }
        Some((x, xs, members, OpKind::Gelu, last))
    }

    fn replace_with(
        &mut self,
        x: NodeIndex,
        xs: usize,
        members: &[NodeIndex],
        kind: OpKind,
        last: NodeIndex,
    ) {
        let g = &mut self.graph;
        let first = members[0];
        let in_shape = g[x].out_shapes.get(xs).cloned().unwrap_or_default();
        let out_shapes = g[last].out_shapes.clone();
        let flops: u64 = members.iter().map(|&m| g[m].flops).sum();
        let name = g[last].name.clone();
        let onnx_op = members.iter().map(|&m| g[m].onnx_op.clone()).collect::<Vec<_>>().join("+");
        let x_edge_name = g
            .edges_directed(first, Direction::Incoming)
            .find(|e| e.source() == x)
            .map(|e| e.weight().name.clone())
            .unwrap_or_default();
        let outs: Vec<(NodeIndex, TensorEdge)> = g
            .edges_directed(last, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().clone()))
            .collect();
        for &m in members {
            g.remove_node(m);
        }
        let mut node = OpNode::new(kind, name);
        node.onnx_op = onnx_op;
        node.in_shapes = vec![in_shape.clone()];
        node.out_shapes = out_shapes;
        node.flops = flops;
        let n = g.add_node(node);
        g.add_edge(
            x,
            n,
            TensorEdge { src_slot: xs, dst_slot: 0, shape: in_shape, name: x_edge_name },
        );
        for (t, e) in outs {
            g.add_edge(n, t, e);
        }
    }
}
