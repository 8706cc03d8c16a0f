//! Two canonicalisation rules that make different writings of one computation one graph
//! (used by [`Cg::canonical`]):
//! - **Common subexpressions merge.** Two parameter-free nodes of the same kind, attributes,
//!   constant operands and output shapes that read the same tensors compute the same tensor;
//!   one is kept. PyTorch's exporters (TorchScript's `cse` pass and the dynamo exporter's
//!   optimiser) write `relu(x)` once where the module computes it once per consumer (as
//!   NAS-Bench-201's ReLU-Conv-BN edges leaving one node do); nape's own exports write one
//!   per edge. Merging is the one direction that needs no guess about how many copies there were.
//! - **One spelling per op.** `Flatten`, `Squeeze` and `Unsqueeze` are `Reshape`s; a mean over every spatial axis that
//!   keeps the dimensions (`ReduceMean`, as the dynamo exporter writes `AdaptiveAvgPool2d(1)`)
//!   is a `GlobalAvgPool`; one that drops them (`x.mean((2, 3))`) is a `GlobalAvgPool` and a
//!   `Reshape` to `[N, C]`, as `AdaptiveAvgPool2d(1)` + `flatten(1)` are written. Only the kind changes: the costs are already the same. An average
//!   pool without padding drops `count_include_pad`, which then changes nothing (PyTorch's
//!   `AvgPool2d` writes 1 by default, NAS-Bench-201's `POOLING` 0). A reshape to its own
//!   input's shape is none, and reshapes in a row are one (tf2onnx writes a squeeze-excitation
//!   block's `[N, C, 1, 1]` through `[N, C]` and back). A concatenation of a concatenation on
//!   the same axis is one concatenation of their inputs, and one of a single tensor is none.

use super::{Attrs, Cg, ConstValue, OpKind, OpNode, Operand, Shape, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;

impl Cg {
    /// Merges duplicated parameter-free nodes until none is left; how many were merged.
    pub(super) fn merge_duplicates(&mut self) -> usize {
        let mut merged = 0;
        loop {
            let pairs = self.duplicate_pairs();
            if pairs.is_empty() {
                return merged;
            }
            for (keep, gone) in pairs {
                self.redirect_and_remove(gone, keep);
                merged += 1;
            }
        }
    }

    /// (kept, duplicate) pairs found in one pass over the nodes, in node order.
    fn duplicate_pairs(&self) -> Vec<(NodeIndex, NodeIndex)> {
        let g = &self.graph;
        let mut seen: HashMap<MergeKey, NodeIndex> = HashMap::new();
        let mut pairs = Vec::new();
        for n in g.node_indices() {
            let Some(key) = self.merge_key(n) else { continue };
            match seen.get(&key) {
                Some(&first) => pairs.push((first, n)),
                None => {
                    seen.insert(key, n);
                }
            }
        }
        pairs
    }

    /// What a node computes, when it may be merged with another that computes the same: its
    /// kind, attributes, shapes, constant operands (not their names) and its inputs.
    fn merge_key(&self, n: NodeIndex) -> Option<MergeKey<'_>> {
        let g = &self.graph;
        let node = &g[n];
        let pure = node.params == 0 && node.operands.iter().all(|o| !o.param);
        if !pure || matches!(node.kind, OpKind::Input | OpKind::Output | OpKind::Unknown(_)) {
            return None;
        }
        let mut ins: Vec<(usize, usize, usize)> = g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.weight().dst_slot, e.source().index(), e.weight().src_slot))
            .collect();
        if ins.is_empty() && node.kind != OpKind::Zero {
            return None; // (zeros are cut from their inputs: all zeros of a shape are one)
        }
        ins.sort_unstable();
        let operands: Vec<u64> = node.operands.iter().map(operand_digest).collect();
        let attrs = serde_json::to_string(&node.attrs).unwrap_or_default();
        Some(MergeKey {
            kind: node.kind.as_str(),
            onnx_op: &node.onnx_op,
            attrs,
            out_shapes: &node.out_shapes,
            act_slots: &node.act_slots,
            operands,
            ins,
        })
    }

    /// Moves `gone`'s consumers onto `keep` (same outputs, same slots) and removes `gone`.
    fn redirect_and_remove(&mut self, gone: NodeIndex, keep: NodeIndex) {
        for (t, e) in self.take_consumers(gone) {
            self.graph.add_edge(keep, t, e);
        }
        self.graph.remove_node(gone);
    }

    /// Gives each op its one spelling (see the module docs).
    pub(super) fn unify_spellings(&mut self) {
        self.spell_each_op();
        while self.join_reshapes() {}
        while self.flatten_concat() {}
    }

    /// A concatenation that reads a concatenation on the same axis reads that one's inputs
    /// instead (concatenation is associative): a DenseNet concatenates each layer's input
    /// afresh in PyTorch and one feature at a time in Keras. The inner one stays where
    /// something else reads it. Whether it changed anything.
    fn flatten_concat(&mut self) -> bool {
        let g = &self.graph;
        let axis = |n: NodeIndex| {
            let rank = g[n].out_shape().len() as i64;
            g[n].attrs.axes.first().map(|&a| if a < 0 { a + rank } else { a })
        };
        let plain = |n: NodeIndex| g[n].kind == OpKind::Concat && g[n].operands.is_empty();
        let single = g
            .node_indices()
            .find(|&n| plain(n) && g.edges_directed(n, Direction::Incoming).count() == 1);
        if let Some(n) = single {
            self.splice_out(n); // a concatenation of one tensor is that tensor
            return true;
        }
        let found = g.node_indices().filter(|&n| plain(n)).find_map(|outer| {
            g.edges_directed(outer, Direction::Incoming)
                .find(|e| plain(e.source()) && axis(e.source()) == axis(outer))
                .map(|e| (outer, e.id()))
        });
        let Some((outer, via)) = found else { return false };
        let inner = self.graph.edge_endpoints(via).expect("edge of this graph").0;
        let slot = self.graph[via].dst_slot;
        let mut ins: Vec<(usize, usize, NodeIndex, TensorEdge)> = Vec::new();
        for e in self.graph.edges_directed(outer, Direction::Incoming).filter(|e| e.id() != via) {
            ins.push((e.weight().dst_slot, 0, e.source(), e.weight().clone()));
        }
        for e in self.graph.edges_directed(inner, Direction::Incoming) {
            ins.push((slot, e.weight().dst_slot, e.source(), e.weight().clone()));
        }
        ins.sort_by_key(|&(s, sub, _, _)| (s, sub));
        let old: Vec<_> =
            self.graph.edges_directed(outer, Direction::Incoming).map(|e| e.id()).collect();
        for id in old {
            self.graph.remove_edge(id);
        }
        let mut shapes = Vec::with_capacity(ins.len());
        for (k, (_, _, src, e)) in ins.into_iter().enumerate() {
            shapes.push(e.shape.clone());
            self.graph.add_edge(src, outer, TensorEdge { dst_slot: k, ..e });
        }
        self.graph[outer].in_shapes = shapes;
        if self.graph.edges_directed(inner, Direction::Outgoing).next().is_none() {
            self.graph.remove_node(inner);
        }
        true
    }

    /// A reshape to its input's own shape is none, and a reshape of a reshape read by nothing
    /// else is one reshape (row-major order is kept either way); whether it changed anything.
    fn join_reshapes(&mut self) -> bool {
        let g = &self.graph;
        let reshape = |n: NodeIndex| g[n].kind == OpKind::Reshape;
        let found = g.node_indices().filter(|&n| reshape(n)).find_map(|n| {
            let p = self.single_producer(n)?;
            if g[n].in_shapes.first().map(|s| s.as_slice()) == Some(g[n].out_shape()) {
                return Some((n, None));
            }
            let only_n = g.edges_directed(p, Direction::Outgoing).count() == 1;
            (reshape(p) && only_n && self.single_producer(p).is_some()).then_some((n, Some(p)))
        });
        match found {
            Some((n, None)) => self.splice_out(n),
            Some((n, Some(p))) => {
                self.graph[n].in_shapes = self.graph[p].in_shapes.clone();
                self.splice_out(p);
            }
            None => return false,
        }
        true
    }

    fn spell_each_op(&mut self) {
        for n in self.graph.node_indices().collect::<Vec<_>>() {
            if self.graph[n].kind == OpKind::ReduceMean && is_flat_global_mean(&self.graph[n]) {
                self.split_flat_mean(n);
            }
            let node = &mut self.graph[n];
            if matches!(node.kind, OpKind::Flatten | OpKind::Squeeze | OpKind::Unsqueeze) {
                node.kind = OpKind::Reshape;
                node.attrs = Attrs::default();
            } else if node.kind == OpKind::ReduceMean && is_global_mean(node) {
                node.kind = OpKind::GlobalAvgPool;
                node.attrs = Attrs::default();
            } else if node.kind == OpKind::AvgPool && node.attrs.padding.iter().all(|&p| p == 0) {
                node.attrs.values.remove("count_include_pad");
            }
        }
    }
}

impl Cg {
    /// A spatial mean that drops the reduced axes becomes a global pool to `[N, C, 1, 1]`
    /// followed by a reshape to `[N, C]` (the costs stay on the mean).
    fn split_flat_mean(&mut self, n: NodeIndex) {
        let g = &mut self.graph;
        let flat = g[n].out_shapes[0].clone();
        let mut kept = g[n].in_shapes[0].clone();
        kept[2..].iter_mut().for_each(|d| *d = 1);
        let mut reshape = OpNode::new(OpKind::Reshape, format!("{}.flat", g[n].name));
        reshape.in_shapes = vec![kept.clone()];
        reshape.out_shapes = vec![flat];
        let r = g.add_node(reshape);
        let outs = self.take_consumers(n);
        let g = &mut self.graph;
        for (t, e) in outs {
            g.add_edge(r, t, e);
        }
        let name = g[n].name.clone();
        g.add_edge(n, r, TensorEdge { src_slot: 0, dst_slot: 0, shape: kept.clone(), name });
        g[n].out_shapes = vec![kept];
    }
}

/// A constant operand by slot, shape and value; by name when its value is not known (a weight
/// read for its shape only), so two unknown tensors are never taken for one.
/// See [`Cg::merge_key`]: two nodes with equal keys compute the same values.
#[derive(PartialEq, Eq, Hash)]
struct MergeKey<'g> {
    kind: &'g str,
    onnx_op: &'g str,
    attrs: String,
    out_shapes: &'g [Shape],
    act_slots: &'g [usize],
    operands: Vec<u64>,
    ins: Vec<(usize, usize, usize)>,
}

fn operand_digest(o: &Operand) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (o.slot, &o.shape).hash(&mut h);
    match &o.value {
        Some(ConstValue::Float(v)) => v.iter().for_each(|x| x.to_bits().hash(&mut h)),
        Some(ConstValue::Int(v)) => v.hash(&mut h),
        None => o.name.hash(&mut h),
    }
    h.finish()
}

/// Whether a mean keeps `[N, C]` and reduces every further axis, dropping them.
fn is_flat_global_mean(node: &OpNode) -> bool {
    let (Some(i), Some(o)) = (node.in_shapes.first(), node.out_shapes.first()) else {
        return false;
    };
    i.len() >= 3 && o.len() == 2 && o[..] == i[..2]
}

/// Whether a mean keeps `[N, C]` and reduces every further axis to 1, keeping the rank.
fn is_global_mean(node: &OpNode) -> bool {
    let (Some(i), Some(o)) = (node.in_shapes.first(), node.out_shapes.first()) else {
        return false;
    };
    i.len() >= 3 && o.len() == i.len() && o[..2] == i[..2] && o[2..].iter().all(|&d| d == 1)
}

#[cfg(test)]
mod tests {
    use crate::graph::{Cg, OpKind, OpNode, TensorEdge};
    use petgraph::stable_graph::NodeIndex;

    fn edge(cg: &mut Cg, a: NodeIndex, b: NodeIndex, slot: usize, shape: &[usize]) {
        let e = TensorEdge { src_slot: 0, dst_slot: slot, shape: shape.to_vec(), name: "t".into() };
        cg.graph.add_edge(a, b, e);
    }

    fn node(cg: &mut Cg, kind: OpKind, name: &str, shape: &[usize], params: u64) -> NodeIndex {
        let mut n = OpNode::new(kind, name);
        n.out_shapes = vec![shape.to_vec()];
        n.params = params;
        cg.graph.add_node(n)
    }

    /// x -> relu -> conv1, x -> relu -> conv2 (two relus of x), both convs summed.
    fn two_relus(shared: bool) -> Cg {
        let s = [1, 4, 8, 8];
        let mut cg = Cg::new("t");
        let x = node(&mut cg, OpKind::Input, "x", &s, 0);
        let r1 = node(&mut cg, OpKind::Relu, "r1", &s, 0);
        let r2 = if shared { r1 } else { node(&mut cg, OpKind::Relu, "r2", &s, 0) };
        let c1 = node(&mut cg, OpKind::Conv, "c1", &s, 144);
        let c2 = node(&mut cg, OpKind::Conv, "c2", &s, 144);
        let add = node(&mut cg, OpKind::Add, "add", &s, 0);
        let y = node(&mut cg, OpKind::Output, "y", &s, 0);
        edge(&mut cg, x, r1, 0, &s);
        if !shared {
            edge(&mut cg, x, r2, 0, &s);
        }
        edge(&mut cg, r1, c1, 0, &s);
        edge(&mut cg, r2, c2, 0, &s);
        edge(&mut cg, c1, add, 0, &s);
        edge(&mut cg, c2, add, 1, &s);
        edge(&mut cg, add, y, 0, &s);
        cg
    }

    #[test]
    fn duplicated_relus_merge_but_weighted_nodes_do_not() {
        let mut cg = two_relus(false);
        assert_eq!(cg.merge_duplicates(), 1);
        let kinds: Vec<_> = cg.nodes().map(|(_, n)| n.kind.clone()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == OpKind::Relu).count(), 1);
        assert_eq!(kinds.iter().filter(|k| **k == OpKind::Conv).count(), 2);
        assert_eq!(cg.canonical().structure_hash(), two_relus(true).canonical().structure_hash());
    }

    #[test]
    fn flatten_and_a_spatial_mean_take_one_spelling() {
        let mut cg = Cg::new("t");
        let mut mean = OpNode::new(OpKind::ReduceMean, "m");
        mean.in_shapes = vec![vec![1, 8, 4, 4]];
        mean.out_shapes = vec![vec![1, 8, 1, 1]];
        let mut over_channels = mean.clone();
        over_channels.out_shapes = vec![vec![1, 1, 4, 4]];
        let m = cg.graph.add_node(mean);
        let c = cg.graph.add_node(over_channels);
        let f = node(&mut cg, OpKind::Flatten, "f", &[1, 8], 0);
        let mut pool = OpNode::new(OpKind::AvgPool, "p");
        pool.attrs.padding = vec![0; 4];
        pool.attrs.values.insert("count_include_pad".into(), 1.0);
        let mut padded = pool.clone();
        padded.attrs.padding = vec![1; 4];
        let (p, q) = (cg.graph.add_node(pool), cg.graph.add_node(padded));
        let mut flat = OpNode::new(OpKind::ReduceMean, "flat");
        flat.in_shapes = vec![vec![1, 8, 4, 4]];
        flat.out_shapes = vec![vec![1, 8]];
        let fm = cg.graph.add_node(flat);
        let y = node(&mut cg, OpKind::Output, "y", &[1, 8], 0);
        edge(&mut cg, fm, y, 0, &[1, 8]);
        cg.unify_spellings();
        assert_eq!(cg.graph[fm].kind, OpKind::GlobalAvgPool);
        assert_eq!(cg.graph[fm].out_shapes, vec![vec![1, 8, 1, 1]]);
        let after: Vec<_> = cg.graph.neighbors(fm).map(|r| cg.graph[r].kind.clone()).collect();
        assert_eq!(after, vec![OpKind::Reshape]);
        assert!(cg.graph[p].attrs.values.is_empty());
        assert_eq!(cg.graph[q].attrs.values.len(), 1);
        assert_eq!(cg.graph[m].kind, OpKind::GlobalAvgPool);
        assert_eq!(cg.graph[c].kind, OpKind::ReduceMean);
        assert_eq!(cg.graph[f].kind, OpKind::Reshape);
    }
    /// x -> conv1; cat(x, conv1) -> conv2; the last cat of all three, written Keras' way
    /// (`cat(cat(x, conv1), conv2)`) or PyTorch's (`cat(x, conv1, conv2)`).
    fn dense_block(incremental: bool) -> Cg {
        let s = [1, 4, 8, 8];
        let mut cg = Cg::new("t");
        let x = node(&mut cg, OpKind::Input, "x", &s, 0);
        let c1 = node(&mut cg, OpKind::Conv, "c1", &s, 144);
        let cat1 = node(&mut cg, OpKind::Concat, "cat1", &[1, 8, 8, 8], 0);
        let c2 = node(&mut cg, OpKind::Conv, "c2", &s, 288);
        let cat2 = node(&mut cg, OpKind::Concat, "cat2", &[1, 12, 8, 8], 0);
        let y = node(&mut cg, OpKind::Output, "y", &[1, 12, 8, 8], 0);
        for n in [cat1, cat2] {
            cg.graph[n].attrs.axes = vec![1];
        }
        edge(&mut cg, x, c1, 0, &s);
        edge(&mut cg, x, cat1, 0, &s);
        edge(&mut cg, c1, cat1, 1, &s);
        edge(&mut cg, cat1, c2, 0, &[1, 8, 8, 8]);
        if incremental {
            edge(&mut cg, cat1, cat2, 0, &[1, 8, 8, 8]);
            edge(&mut cg, c2, cat2, 1, &s);
        } else {
            edge(&mut cg, x, cat2, 0, &s);
            edge(&mut cg, c1, cat2, 1, &s);
            edge(&mut cg, c2, cat2, 2, &s);
        }
        edge(&mut cg, cat2, y, 0, &[1, 12, 8, 8]);
        cg
    }

    #[test]
    fn concatenations_in_a_row_are_one_and_reshapes_back_and_forth_are_none() {
        let (keras, torch) = (dense_block(true).canonical(), dense_block(false).canonical());
        assert_eq!(keras.structure_hash(), torch.structure_hash());
        let s = [1, 8, 1, 1];
        let mut cg = Cg::new("t");
        let x = node(&mut cg, OpKind::Input, "x", &s, 0);
        let flat = node(&mut cg, OpKind::Squeeze, "flat", &[1, 8], 0);
        let back = node(&mut cg, OpKind::Unsqueeze, "back", &s, 0);
        let y = node(&mut cg, OpKind::Output, "y", &s, 0);
        cg.graph[flat].in_shapes = vec![s.to_vec()];
        cg.graph[back].in_shapes = vec![vec![1, 8]];
        edge(&mut cg, x, flat, 0, &s);
        edge(&mut cg, flat, back, 0, &[1, 8]);
        edge(&mut cg, back, y, 0, &s);
        let kinds: Vec<_> = cg.canonical().nodes().map(|(_, n)| n.kind.clone()).collect();
        assert_eq!(kinds, [OpKind::Input, OpKind::Output]);
    }
}
