//! Writings of other exporters, read as PyTorch writes the same network (used by
//! [`Cg::canonical`]). tf2onnx, which converts TensorFlow and Keras models, writes a Keras
//! MobileNetV2 with four differences from torchvision's, none of them in what the network
//! computes:
//! - **a BatchNorm as its affine ops**: `Mul` by a per-channel scale, then `Add` of a
//!   per-channel shift (where it does not fold it into the convolution, as after a depthwise
//!   one, or after a concatenation as in DenseNet). A per-channel `Mul` + `Add` pair is read
//!   as one BatchNorm of both vectors' parameters, which then folds like any other. A scale
//!   alone (a layer scale, learned) stays a `Mul`.
//! - **zero padding as its own op**: Keras' `ZeroPadding2D` before a strided convolution is a
//!   `Pad` (constant 0 on the spatial axes only); it becomes the convolution's padding, a
//!   max pool's where a ReLU comes before it (ResNet's and DenseNet's stems): zeros around
//!   non-negative values change no window's maximum, or an average pool's that counts its
//!   padding (PyTorch's own writing at opset 9). A `Pad` of nothing is none.
//! - **the input in its layout, and normalized**: `[N, H, W, C]`, read by one `Transpose` to
//!   `[N, C, H, W]`: the input is read in the layout the network computes in. Before it, Keras'
//!   `Rescaling` and `Normalization` layers (a `Mul` by 1/255, a `Sub` and a `Div` per
//!   channel), which PyTorch leaves to the data pipeline, are not part of the network; nor is
//!   an input that nothing reads (tf2onnx writes the normalization's statistics as inputs).
//! - **the classifier's softmax**: Keras' classifiers end with it, PyTorch's with the logits;
//!   a `Softmax` or `LogSoftmax` read only by the graph's outputs (a monotone map: the ranking
//!   of the classes, the accuracy, is the same) is not part of the network.

use super::{AttrValue, Cg, ConstValue, OpKind, OpNode, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::borrow::Cow;

impl Cg {
    /// Applies every rule of the module docs until none applies.
    pub(super) fn read_foreign_writings(&mut self) {
        self.read_input_layout();
        while let Some((mul, add)) = self.find_affine() {
            let (shift, flops) = (self.graph[add].params, self.graph[add].flops);
            let node = &mut self.graph[mul];
            node.kind = OpKind::BatchNorm;
            node.params += shift;
            node.flops += flops;
            node.operands.clear();
            self.splice_out(add);
        }
        while let Some((pad, target, pads)) = self.find_zero_pad() {
            let in_shape = self.graph[pad].in_shapes.first().cloned().unwrap_or_default();
            if let Some(t) = target {
                let node = &mut self.graph[t];
                let n = pads.len() / 2;
                let own = |i: usize| node.attrs.padding.get(i).copied().unwrap_or(0);
                node.attrs.padding = (0..2 * n).map(|i| own(i) + pads[i]).collect();
                if node.kind == OpKind::AvgPool {
                    node.attrs.values.insert("count_include_pad".into(), 1.0);
                }
                node.in_shapes[0] = in_shape;
            }
            self.splice_out(pad);
        }
        self.drop_final_softmax();
    }

    /// Removes a node of one input, its consumers reading that input instead (the tensor, its
    /// name and shape, that the node read: the caller sets what the consumers expect).
    pub(super) fn splice_out(&mut self, n: NodeIndex) {
        let Some(inbound) = self.graph.edges_directed(n, Direction::Incoming).next() else {
            return;
        };
        let (src, inbound) = (inbound.source(), inbound.weight().clone());
        for (t, e) in self.take_consumers(n) {
            let edge = TensorEdge {
                src_slot: inbound.src_slot,
                name: inbound.name.clone(),
                shape: inbound.shape.clone(),
                ..e
            };
            self.graph.add_edge(src, t, edge);
        }
        self.graph.remove_node(n);
    }

    /// The node's one input edge's source, and its one consumer, when it has exactly those.
    fn single_link(&self, n: NodeIndex) -> Option<(NodeIndex, NodeIndex)> {
        Some((self.single_producer(n)?, self.single_consumer(n)?))
    }

    /// A `Mul` by a per-channel parameter vector whose one consumer is an `Add` of one.
    fn find_affine(&self) -> Option<(NodeIndex, NodeIndex)> {
        self.find_affine_where(|_| true)
    }

    /// [`Cg::find_affine`] among the `Mul`s that `keep` takes.
    pub(super) fn find_affine_where(
        &self,
        keep: impl Fn(&OpNode) -> bool,
    ) -> Option<(NodeIndex, NodeIndex)> {
        let g = &self.graph;
        g.node_indices().find_map(|mul| {
            if g[mul].kind != OpKind::Mul || !per_channel(&g[mul]) || !keep(&g[mul]) {
                return None;
            }
            let (_, add) = self.single_link(mul)?;
            let is_shift = g[add].kind == OpKind::Add
                && per_channel(&g[add])
                && g[add].params == g[mul].params
                && self.single_link(add).is_some();
            is_shift.then_some((mul, add))
        })
    }

    /// A zero `Pad` of the spatial axes: the pad, the one consumer that takes it as its own
    /// padding (none where it pads nothing) and the pads as a convolution's (begins, then
    /// ends, of the spatial axes).
    fn find_zero_pad(&self) -> Option<(NodeIndex, Option<NodeIndex>, Vec<usize>)> {
        let g = &self.graph;
        g.node_indices().find_map(|pad| {
            if g[pad].kind != OpKind::Pad {
                return None;
            }
            let pads = zero_spatial_pads(&g[pad])?;
            if pads.iter().all(|&p| p == 0) && self.single_producer(pad).is_some() {
                return Some((pad, None, pads));
            }
            let (src, t) = self.single_link(pad)?;
            self.takes_zero_padding(src, t).then_some((pad, Some(t), pads))
        })
    }

    /// Whether `t`, reading `src`'s output padded with zeros, computes the same with the
    /// padding as its own: a convolution; a max pool after a ReLU (zeros around non-negative
    /// values change no window's maximum); an average pool that counts its padding in each
    /// window's size (or has none) and has no `ceil_mode` (PyTorch at opset 9 writes
    /// `AvgPool2d(3, 1, padding=1)` as a `Pad` and an unpadded pool).
    fn takes_zero_padding(&self, src: NodeIndex, t: NodeIndex) -> bool {
        let node = &self.graph[t];
        if node.in_shapes.len() != 1 {
            return false;
        }
        match node.kind {
            OpKind::Conv => true,
            OpKind::MaxPool => matches!(self.graph[src].kind, OpKind::Relu | OpKind::Relu6),
            OpKind::AvgPool => {
                let counts = node.attrs.values.get("count_include_pad") == Some(&1.0)
                    || node.attrs.padding.iter().all(|&p| p == 0);
                counts && node.attr_int("ceil_mode", 0) == 0
            }
            _ => false,
        }
    }

    /// Whether `n` is a softmax read only by graph outputs.
    fn is_final_softmax(&self, n: NodeIndex) -> bool {
        let g = &self.graph;
        matches!(g[n].kind, OpKind::Softmax | OpKind::LogSoftmax)
            && g.edges_directed(n, Direction::Incoming).count() == 1
            && g.edges_directed(n, Direction::Outgoing)
                .all(|e| g[e.target()].kind == OpKind::Output)
    }

    /// The graph as the proxies run it, without what the file wraps around the network: its
    /// input in the layout the network computes in, without the file's input normalization or
    /// inputs nothing reads, its logits without a final softmax (the module docs). So a Keras
    /// file takes the normalized `[N, C, H, W]` images every network gets, and its loss is on
    /// logits. The graph itself where there is none of these.
    pub fn network_only(&self) -> Cow<'_, Cg> {
        let mut cg = self.clone();
        if cg.keep_network_only() {
            Cow::Owned(cg)
        } else {
            Cow::Borrowed(self)
        }
    }

    /// [`Cg::network_only`] in place, on a graph the caller owns; whether anything changed.
    pub fn keep_network_only(&mut self) -> bool {
        let input = self.read_input_layout();
        self.drop_final_softmax() || input
    }

    /// Splices out every softmax read only by outputs; whether there was one.
    fn drop_final_softmax(&mut self) -> bool {
        let last: Vec<NodeIndex> =
            self.graph.node_indices().filter(|&n| self.is_final_softmax(n)).collect();
        for &n in &last {
            self.splice_out(n);
        }
        !last.is_empty()
    }

    /// An input's normalization is dropped, an input read only by one `Transpose` is read as
    /// that transpose's output, and an input nothing reads is removed (when another is read);
    /// whether anything changed.
    fn read_input_layout(&mut self) -> bool {
        let mut changed = self.drop_unread_inputs();
        let inputs: Vec<NodeIndex> =
            self.graph.node_indices().filter(|&n| self.graph[n].kind == OpKind::Input).collect();
        for input in inputs {
            while let Some(t) = self.single_consumer(input).filter(|&t| self.is_normalization(t)) {
                self.splice_out(t);
                changed = true;
            }
            let Some(t) = self.single_consumer(input) else { continue };
            let transpose = self.graph[t].kind == OpKind::Transpose;
            if !transpose || self.single_link(t).is_none() || self.graph[t].out_shapes.is_empty() {
                continue;
            }
            self.graph[input].out_shapes = self.graph[t].out_shapes.clone();
            self.splice_out(t);
            let shape = self.graph[input].out_shapes[0].clone();
            let outs: Vec<_> =
                self.graph.edges_directed(input, Direction::Outgoing).map(|e| e.id()).collect();
            for id in outs {
                self.graph[id].shape = shape.clone();
            }
            changed = true;
        }
        changed
    }

    /// Removes the inputs nothing reads, when another input is read; whether there were any.
    pub(super) fn drop_unread_inputs(&mut self) -> bool {
        let g = &self.graph;
        let inputs = g.node_indices().filter(|&n| g[n].kind == OpKind::Input);
        let (unread, read): (Vec<NodeIndex>, Vec<NodeIndex>) =
            inputs.partition(|&n| g.edges_directed(n, Direction::Outgoing).next().is_none());
        if read.is_empty() || unread.is_empty() {
            return false;
        }
        for n in unread {
            self.graph.remove_node(n);
        }
        true
    }

    /// Whether `n`, reading an input, normalizes it (Keras' `Rescaling` and `Normalization`
    /// layers, which PyTorch leaves to the data pipeline): an elementwise `Add`, `Sub`, `Mul`
    /// or `Div` of constants of one value, or one per channel, that keeps the input's shape.
    fn is_normalization(&self, n: NodeIndex) -> bool {
        let node = &self.graph[n];
        let out = node.out_shape();
        // one value, or one per channel of either layout (axis 1, or the last)
        let channels = [1, out.get(1).copied().unwrap_or(1), out.last().copied().unwrap_or(1)];
        matches!(node.kind, OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div)
            && self.single_link(n).is_some()
            && node.in_shapes.first().is_some_and(|s| s.as_slice() == out)
            && node.operands.iter().all(|o| channels.contains(&o.shape.iter().product::<usize>()))
    }
}

/// Whether a node's only parameter is one value per channel (axis 1) of its output, broadcast
/// over the other axes: `[C, 1, 1]`, `[1, C, 1, 1]`, or `[C]` on `[N, C]`.
fn per_channel(node: &OpNode) -> bool {
    let out = node.out_shape();
    let [p] = node.operands.iter().filter(|o| o.param).collect::<Vec<_>>()[..] else {
        return false;
    };
    if out.len() < 2 || node.params != out[1] as u64 || p.shape.len() > out.len() {
        return false;
    }
    // right-aligned against the output: C at axis 1, 1 everywhere else
    let offset = out.len() - p.shape.len();
    p.shape.iter().enumerate().all(|(i, &d)| d == if offset + i == 1 { out[1] } else { 1 })
        && offset <= 1
}

/// The spatial pads of a constant-zero `Pad` that pads nothing else, as a convolution's
/// (begins of the spatial axes, then their ends).
fn zero_spatial_pads(node: &OpNode) -> Option<Vec<usize>> {
    let mode = node.attr_str("mode").unwrap_or("constant");
    let rank = node.in_shapes.first()?.len();
    let operand = |slot: usize| node.operands.iter().find(|o| o.slot == slot);
    let value = match operand(2).map(|o| o.value.as_ref()) {
        Some(Some(ConstValue::Float(v))) => v.first().copied().unwrap_or(0.0) as f64,
        Some(Some(ConstValue::Int(v))) => v.first().copied().unwrap_or(0) as f64,
        Some(None) => return None,
        None => node.attr_float("value", 0.0),
    };
    let raw: Vec<i64> = match operand(1).map(|o| o.value.as_ref()) {
        Some(Some(ConstValue::Int(v))) => v.to_vec(),
        Some(_) => return None,
        None => match node.onnx_attrs.get("pads") {
            Some(AttrValue::Ints(v)) => v.clone(),
            _ => return None,
        },
    };
    if mode != "constant" || value != 0.0 || operand(3).is_some() || raw.len() != 2 * rank {
        return None;
    }
    let (begins, ends) = raw.split_at(rank);
    let ok = rank >= 3 && raw.iter().all(|&p| p >= 0);
    let spatial_only = begins[..2].iter().chain(&ends[..2]).all(|&p| p == 0);
    (ok && spatial_only)
        .then(|| begins[2..].iter().chain(&ends[2..]).map(|&p| p as usize).collect())
}

#[cfg(test)]
mod tests {
    use crate::graph::{AttrValue, Cg, ConstValue, OpKind, OpNode, Operand, TensorEdge};
    use std::sync::Arc;

    /// A chain of nodes, each reading the one before, ending in an Output.
    fn chain(nodes: Vec<OpNode>) -> Cg {
        let mut cg = Cg::new("t");
        let mut prev = None;
        for n in nodes.into_iter().chain([OpNode::new(OpKind::Output, "y")]) {
            let shape: Vec<usize> = prev
                .map(|p: petgraph::stable_graph::NodeIndex| cg.graph[p].out_shape().to_vec())
                .unwrap_or_default();
            let i = cg.graph.add_node(n);
            if let Some(p) = prev {
                let e = TensorEdge { src_slot: 0, dst_slot: 0, shape, name: String::new() };
                cg.graph.add_edge(p, i, e);
            }
            prev = Some(i);
        }
        cg
    }

    fn node(kind: OpKind, shape: &[usize]) -> OpNode {
        let mut n = OpNode::new(kind.clone(), kind.as_str());
        n.out_shapes = vec![shape.to_vec()];
        n
    }

    /// A node with a per-channel parameter operand of `shape`.
    fn scaled(kind: OpKind, out: &[usize], shape: &[usize]) -> OpNode {
        let mut n = node(kind, out);
        n.in_shapes = vec![out.to_vec()];
        n.params = shape.iter().product::<usize>() as u64;
        n.operands = vec![Operand {
            slot: 1,
            name: format!("{}.p", n.name),
            shape: shape.to_vec(),
            param: true,
            value: None,
        }];
        n
    }

    fn pad(into: &[usize], out: &[usize], pads: Vec<i64>, mode: &str) -> OpNode {
        let mut n = node(OpKind::Pad, out);
        n.in_shapes = vec![into.to_vec()];
        n.onnx_attrs.insert("mode".into(), AttrValue::Str(mode.into()));
        let value = Some(ConstValue::Int(Arc::new(pads)));
        n.operands =
            vec![Operand { slot: 1, name: "pads".into(), shape: vec![8], param: false, value }];
        n
    }

    fn kinds(cg: &Cg) -> Vec<OpKind> {
        cg.nodes().map(|(_, n)| n.kind.clone()).collect()
    }

    const S: [usize; 4] = [1, 8, 4, 4];

    #[test]
    fn a_per_channel_scale_and_shift_is_a_batch_norm_and_folds_but_a_scale_alone_stays() {
        let conv = || {
            let mut c = node(OpKind::Conv, &S);
            c.params = 72;
            c.attrs.bias = Some(false);
            c
        };
        let affine = chain(vec![
            node(OpKind::Input, &S),
            conv(),
            scaled(OpKind::Mul, &S, &[1, 8, 1, 1]),
            scaled(OpKind::Add, &S, &[8, 1, 1]),
            node(OpKind::Relu, &S),
        ])
        .canonical();
        assert_eq!(kinds(&affine), [OpKind::Input, OpKind::Conv, OpKind::Relu, OpKind::Output]);
        assert_eq!(affine.summary().params, 72 + 8, "folded: one bias per channel");
        let layer_scale = chain(vec![
            node(OpKind::Input, &S),
            conv(),
            scaled(OpKind::Mul, &S, &[8, 1, 1]),
            node(OpKind::Relu, &S),
        ])
        .canonical();
        assert!(kinds(&layer_scale).contains(&OpKind::Mul));
        assert_eq!(layer_scale.summary().params, 72 + 8);
        // a scale over the width (as wide as the channels) is no per-channel affine
        let width = chain(vec![
            node(OpKind::Input, &[1, 4, 4, 4]),
            scaled(OpKind::Mul, &[1, 4, 4, 4], &[4]),
            scaled(OpKind::Add, &[1, 4, 4, 4], &[4]),
            node(OpKind::Relu, &[1, 4, 4, 4]),
        ])
        .canonical();
        assert!(!kinds(&width).contains(&OpKind::BatchNorm));
    }

    #[test]
    fn zero_padding_becomes_the_convolution_s_or_after_a_relu_the_max_pool_s() {
        let padded = [1, 8, 6, 6];
        let spatial = vec![0, 0, 1, 1, 0, 0, 1, 1];
        let read = |mode: &str, before: OpKind, after: OpKind| {
            let mut next = node(after, &S);
            next.in_shapes = vec![padded.to_vec()];
            next.attrs.padding = vec![0; 4];
            chain(vec![
                node(OpKind::Input, &S),
                node(before, &S),
                pad(&S, &padded, spatial.clone(), mode),
                next,
            ])
            .canonical()
        };
        let conv = read("constant", OpKind::Sigmoid, OpKind::Conv);
        assert!(!kinds(&conv).contains(&OpKind::Pad));
        let c = conv.nodes().find(|(_, n)| n.kind == OpKind::Conv).unwrap().1;
        assert_eq!((c.attrs.padding.clone(), c.in_shapes[0].clone()), (vec![1; 4], S.to_vec()));
        assert!(kinds(&read("reflect", OpKind::Sigmoid, OpKind::Conv)).contains(&OpKind::Pad));
        assert!(!kinds(&read("constant", OpKind::Relu, OpKind::MaxPool)).contains(&OpKind::Pad));
        // a sigmoid's zeros are not below its values: a max pool's own padding differs
        assert!(kinds(&read("constant", OpKind::Sigmoid, OpKind::MaxPool)).contains(&OpKind::Pad));
    }

    #[test]
    fn an_nhwc_input_its_normalization_and_a_final_softmax_are_not_the_network() {
        let nhwc = [1, 4, 4, 8];
        let mut t = node(OpKind::Transpose, &S);
        t.attrs.axes = vec![0, 3, 1, 2];
        let mut conv = node(OpKind::Conv, &S);
        conv.params = 80;
        let cg = chain(vec![
            node(OpKind::Input, &nhwc),
            scaled(OpKind::Mul, &nhwc, &[]),
            scaled(OpKind::Sub, &nhwc, &[1, 1, 1, 8]),
            t,
            conv,
            node(OpKind::Softmax, &S),
        ])
        .canonical();
        assert_eq!(kinds(&cg), [OpKind::Input, OpKind::Conv, OpKind::Output]);
        let input = cg.nodes().next().unwrap().1;
        assert_eq!(input.out_shape(), S, "read in the layout the network computes in");
        // a softmax that something else reads stays
        let mut inner = chain(vec![node(OpKind::Input, &S), node(OpKind::Softmax, &S)]);
        let out = inner.graph.node_indices().next_back().unwrap();
        let r = inner.graph.add_node(node(OpKind::Relu, &S));
        let soft = inner.graph.node_indices().nth(1).unwrap();
        let e = TensorEdge { src_slot: 0, dst_slot: 0, shape: S.to_vec(), name: String::new() };
        inner.graph.add_edge(soft, r, e.clone());
        inner.graph.add_edge(r, out, TensorEdge { dst_slot: 1, ..e });
        assert!(kinds(&inner.canonical()).contains(&OpKind::Softmax));
    }
}
