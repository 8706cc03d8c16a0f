//! Writings of one op that differ with the opset a file was exported at, read as one (used by
//! [`Cg::canonical`]). PyTorch's exporter writes a network at opsets 9 and earlier (and ONNX's
//! version converter below that) with two differences from opset 11 and later, none of them in
//! what the network computes:
//! - **a max pool's padding**: `ceil_mode` exists from opset 10; before, a pool with
//!   `ceil_mode=True` is written with end pads instead, often more than its last window reaches
//!   (GoogLeNet's `[0, 0, 2, 2]` where one row and column are read). A max pool's end pads are
//!   read as what its output needs: the last window's reach past the input and the begin pads,
//!   from the shapes. So `ceil_mode`, end pads it makes superfluous and end pads that change
//!   nothing are one writing (ResNet's stem pool, `padding=1` on 112 rows to 56, reads no end
//!   pad: its canonical pads are `[1, 1, 0, 0]`). (Padding a max pool with -inf, as ONNX does, is taking the partial
//!   window's maximum, which is what `ceil_mode` does.)
//! - **`chunk` and `split`** are one `Split` up to opset 10, and one `Slice` per part after: a
//!   `Split` is read as its slices, each reading the split's input along its axis.

use super::{Cg, ConstValue, OpKind, OpNode, Operand, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use std::sync::Arc;

impl Cg {
    /// Applies both rules of the module docs.
    pub(super) fn read_older_opsets(&mut self) {
        for n in self.graph.node_indices().collect::<Vec<_>>() {
            match self.graph[n].kind {
                OpKind::MaxPool => {
                    if let Some(pads) = max_pool_padding(&self.graph[n]) {
                        self.graph[n].attrs.padding = pads;
                    }
                }
                OpKind::Split => self.split_as_slices(n),
                _ => {}
            }
        }
    }

    /// Replaces a `Split` of one input by one `Slice` per output something reads (starts, ends
    /// and axis as the `Slice`'s constant operands, so two parts of one shape stay two).
    fn split_as_slices(&mut self, n: NodeIndex) {
        let (src, inbound) = match self.inputs_of(n)[..] {
            [(src, e)] => (src, e.clone()),
            _ => return,
        };
        let split = self.graph[n].clone();
        let rank = inbound.shape.len() as i64;
        let axis = split.attrs.axes.first().copied().unwrap_or(0);
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return;
        }
        let consumers = self.take_consumers(n);
        let mut start = 0i64;
        for (i, shape) in split.out_shapes.iter().enumerate() {
            let len = shape.get(axis as usize).copied().unwrap_or(0) as i64;
            let readers: Vec<_> = consumers.iter().filter(|(_, e)| e.src_slot == i).collect();
            if !readers.is_empty() {
                let slice =
                    self.graph.add_node(slice_of(&split, i, shape, [start, start + len, axis]));
                self.graph.add_edge(src, slice, TensorEdge { dst_slot: 0, ..inbound.clone() });
                for (t, e) in readers {
                    self.graph.add_edge(slice, *t, TensorEdge { src_slot: 0, ..e.clone() });
                }
            }
            start += len;
        }
        self.graph.remove_node(n);
    }
}

/// Output `i` of `split` as a `Slice` of `[start, end)` along `axis`.
fn slice_of(split: &OpNode, i: usize, shape: &[usize], [start, end, axis]: [i64; 3]) -> OpNode {
    let mut s = OpNode::new(OpKind::Slice, format!("{}:{i}", split.name));
    s.onnx_op = split.onnx_op.clone();
    s.in_shapes = split.in_shapes.first().cloned().into_iter().collect();
    s.out_shapes = vec![shape.to_vec()];
    s.act_slots = vec![0];
    s.operands = [start, end, axis]
        .iter()
        .enumerate()
        .map(|(k, &v)| Operand {
            slot: k + 1,
            name: format!("{}:{i}:{k}", split.name),
            shape: vec![1],
            param: false,
            value: Some(ConstValue::Int(Arc::new(vec![v]))),
        })
        .collect();
    s
}

/// How far a sliding window's last position reaches along one axis, from the first padded
/// row: `out` windows of `kernel` taps `dilation` apart, `stride` apart (what `auto_pad` and
/// `ceil_mode` pad up to).
pub fn window_reach(out: usize, kernel: usize, stride: usize, dilation: usize) -> usize {
    (out.max(1) - 1) * stride + (kernel.max(1) - 1) * dilation + 1
}

/// A max pool's pads with each end pad as far as its last window reaches past the input and
/// the begin pad (none where it stays inside); `None` where the shapes do not say.
fn max_pool_padding(node: &OpNode) -> Option<Vec<usize>> {
    let (ins, out, a) = (node.in_shapes.first()?, node.out_shapes.first()?, &node.attrs);
    let n = a.kernel.len();
    if n == 0 || ins.len() != n + 2 || out.len() != n + 2 || out[2..].contains(&0) {
        return None;
    }
    let mut pads = a.padding.clone();
    pads.resize(2 * n, 0);
    for i in 0..n {
        let stride = a.stride.get(i).copied().unwrap_or(1);
        let dilation = a.dilation.get(i).copied().unwrap_or(1);
        let reach = window_reach(out[2 + i], a.kernel[i], stride, dilation);
        pads[n + i] = reach.saturating_sub(ins[2 + i] + pads[i]);
    }
    Some(pads)
}

#[cfg(test)]
mod tests {
    use crate::graph::{Cg, OpKind, OpNode, TensorEdge};

    fn pool(into: usize, out: usize, padding: Vec<usize>) -> OpNode {
        let mut p = OpNode::new(OpKind::MaxPool, "p");
        p.attrs.kernel = vec![3, 3];
        p.attrs.stride = vec![2, 2];
        p.attrs.padding = padding;
        p.in_shapes = vec![vec![1, 8, into, into]];
        p.out_shapes = vec![vec![1, 8, out, out]];
        p
    }

    fn padding_read(p: OpNode) -> Vec<usize> {
        let mut cg = Cg::new("t");
        cg.graph.add_node(p);
        cg.read_older_opsets();
        let pool = cg.graph.node_weights().next().expect("the pool");
        pool.attrs.padding.clone()
    }

    #[test]
    fn a_max_pool_s_end_pads_are_what_its_last_window_reaches() {
        // GoogLeNet's stem: 112 -> 56 by ceil_mode (opset 10+) or by end pads of 2 (opset 9)
        assert_eq!(padding_read(pool(112, 56, vec![])), [0, 0, 1, 1]);
        assert_eq!(padding_read(pool(112, 56, vec![0, 0, 2, 2])), [0, 0, 1, 1]);
        // SqueezeNet's: 111 -> 55 needs no end pad; opset 9 writes one
        assert_eq!(padding_read(pool(111, 55, vec![0, 0, 1, 1])), [0, 0, 0, 0]);
        // ResNet's: its last window ends on the input's last row, so its end pad reads nothing
        assert_eq!(padding_read(pool(112, 56, vec![1, 1, 1, 1])), [1, 1, 0, 0]);
        // a stride-1 pool keeping the size reads both pads
        let mut same = pool(8, 8, vec![1, 1, 1, 1]);
        same.attrs.stride = vec![1, 1];
        assert_eq!(padding_read(same), [1, 1, 1, 1]);
    }

    #[test]
    fn a_split_is_its_slices_and_two_halves_stay_two() {
        let mut cg = Cg::new("t");
        let (whole, half) = (vec![1, 8, 4, 4], vec![1, 4, 4, 4]);
        let mut x = OpNode::new(OpKind::Input, "x");
        x.out_shapes = vec![whole.clone()];
        let mut split = OpNode::new(OpKind::Split, "s");
        split.attrs.axes = vec![1];
        split.in_shapes = vec![whole.clone()];
        split.out_shapes = vec![half.clone(), half.clone()];
        let mut add = OpNode::new(OpKind::Add, "a");
        add.out_shapes = vec![half.clone()];
        let (x, s, a) = (cg.graph.add_node(x), cg.graph.add_node(split), cg.graph.add_node(add));
        let e = |from: usize, to: usize, shape: &Vec<usize>| TensorEdge {
            src_slot: from,
            dst_slot: to,
            shape: shape.clone(),
            name: "t".into(),
        };
        cg.graph.add_edge(x, s, e(0, 0, &whole));
        cg.graph.add_edge(s, a, e(0, 0, &half));
        cg.graph.add_edge(s, a, e(1, 1, &half));
        cg.read_older_opsets();
        assert_eq!(cg.merge_duplicates(), 0);
        let slices: Vec<_> = cg.graph.node_weights().filter(|n| n.kind == OpKind::Slice).collect();
        assert_eq!(slices.len(), 2);
        assert!(slices.iter().all(|s| s.out_shapes == [half.clone()]));
        assert_eq!(cg.graph.edge_count(), 4);
        assert_eq!(cg.graph.node_count(), 4);
    }
}
