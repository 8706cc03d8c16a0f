//! Canonicalisation: one network gives one graph, however it was exported.
//!
//! PyTorch's eval-mode ONNX export folds BatchNorm into the preceding convolution (which then
//! gains a bias) and writes `Linear` either as `Gemm` or as `MatMul` + `Add`. nape's own exports
//! keep BatchNorm explicit. [`Cg::canonical`] brings every graph to the folded form:
//! - a BatchNorm whose only input is a Conv/ConvTranspose/Linear that feeds nothing else is
//!   folded into it (the weighted node gains a bias; the BatchNorm's scale and shift become that
//!   bias, so the parameter count is the folded one: weights + one bias per output channel);
//! - an Add of a per-feature parameter vector directly after a bias-less Linear (or Conv) that
//!   feeds nothing else becomes that node's bias.
//!
//! The raw graph (what `nape inspect` shows) stays faithful to the file; features read the
//! canonical one.

use super::{Cg, OpKind, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

impl Cg {
    /// The canonical form of this graph (see the module docs). Node order stays topological.
    pub fn canonical(&self) -> Cg {
        let mut cg = self.clone();
        while let Some((w, victim)) = cg.find_foldable() {
            cg.fold_into(w, victim);
        }
        // removal keeps topological order (StableGraph keeps indices); compact them
        let _ = cg.sort();
        cg
    }

    /// A (weighted node, follower) pair that can be folded, if any.
    fn find_foldable(&self) -> Option<(NodeIndex, NodeIndex)> {
        let g = &self.graph;
        for n in g.node_indices() {
            let node = &g[n];
            if !node.kind.is_weighted() {
                continue;
            }
            let outs: Vec<_> = g.edges_directed(n, Direction::Outgoing).collect();
            if outs.len() != 1 {
                continue;
            }
            let next = outs[0].target();
            let nn = &g[next];
            if g.edges_directed(next, Direction::Incoming).count() != 1 {
                continue;
            }
            let channels = node.out_shape().get(1).copied().unwrap_or(0) as u64;
            let features = node.out_shape().last().copied().unwrap_or(0) as u64;
            let folds = match nn.kind {
                OpKind::BatchNorm => true,
                OpKind::Add => {
                    node.attrs.bias != Some(true)
                        && nn.params > 0
                        && (nn.params == channels || nn.params == features)
                }
                _ => false,
            };
            if folds {
                return Some((n, next));
            }
        }
        None
    }

    fn fold_into(&mut self, w: NodeIndex, victim: NodeIndex) {
        let g = &mut self.graph;
        let out_shape = g[w].out_shape().to_vec();
        let bias_len = match g[w].kind {
            OpKind::Linear => out_shape.last().copied().unwrap_or(0),
            _ => out_shape.get(1).copied().unwrap_or(0),
        } as u64;
        let elems: u64 = out_shape.iter().map(|&d| d as u64).product();
        {
            let node = &mut g[w];
            if node.attrs.bias != Some(true) {
                node.params += bias_len;
                node.flops += elems;
                node.attrs.bias = Some(true);
            }
        }
        let outs: Vec<(NodeIndex, TensorEdge)> = g
            .edges_directed(victim, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().clone()))
            .collect();
        g.remove_node(victim);
        for (t, mut e) in outs {
            e.src_slot = 0;
            g.add_edge(w, t, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Cg, OpKind, OpNode, TensorEdge};

    fn conv_bn(bn: bool) -> Cg {
        let mut cg = Cg::new("t");
        let s = vec![1, 8, 4, 4];
        let mut nodes = vec![OpNode::new(OpKind::Input, "x")];
        let mut conv = OpNode::new(OpKind::Conv, "conv");
        conv.params = if bn { 8 * 3 * 9 } else { 8 * 3 * 9 + 8 };
        conv.attrs.bias = Some(!bn);
        nodes.push(conv);
        if bn {
            let mut b = OpNode::new(OpKind::BatchNorm, "bn");
            b.params = 16;
            nodes.push(b);
        }
        nodes.push(OpNode::new(OpKind::Relu, "relu"));
        nodes.push(OpNode::new(OpKind::Output, "y"));
        let mut prev = None;
        for mut n in nodes {
            if n.kind != OpKind::Output {
                n.out_shapes = vec![s.clone()];
            }
            let i = cg.graph.add_node(n);
            if let Some(p) = prev {
                let e =
                    TensorEdge { src_slot: 0, dst_slot: 0, shape: s.clone(), name: String::new() };
                cg.graph.add_edge(p, i, e);
            }
            prev = Some(i);
        }
        cg
    }

    #[test]
    fn bn_after_conv_folds_to_the_same_graph_as_a_biased_conv() {
        let a = conv_bn(true).canonical();
        let b = conv_bn(false).canonical();
        a.validate().unwrap();
        let kinds = |c: &Cg| c.nodes().map(|(_, n)| n.kind.clone()).collect::<Vec<_>>();
        assert_eq!(kinds(&a), kinds(&b));
        assert_eq!(a.summary().params, b.summary().params);
        assert_eq!(a.summary().params, 8 * 3 * 9 + 8);
    }
}
