//! Canonicalisation: one network gives one graph, however it was exported.
//!
//! PyTorch's eval-mode ONNX export folds BatchNorm into the preceding convolution (which then
//! gains a bias) and writes `Linear` either as `Gemm` or as `MatMul` + `Add`. nape's own exports
//! keep BatchNorm explicit. [`Cg::canonical`] brings every graph to the folded form:
//! - a BatchNorm whose only input is a Conv/ConvTranspose/Linear that feeds nothing else is
//!   folded into it (the weighted node gains a bias; the BatchNorm's scale and shift become that
//!   bias, so the parameter count is the folded one: weights + one bias per output channel);
//! - an Add of a per-feature parameter vector directly after a bias-less Linear (or Conv) that
//!   feeds nothing else becomes that node's bias;
//! - a Zero (an op whose output is all zeros, as NAS-Bench-201's `none`) is cut from every Add
//!   with another input (`x + 0 = x`), an Add left with one input is spliced out, and nodes
//!   that no longer reach an output are removed (an Add of a constant, such as a position
//!   embedding, is not one left with one input). A cell whose `none` edges cut
//!   it off then looks like what it computes, not like a dense cell. A Zero that something
//!   other than a sum reads loses its input edge (a zero does not depend on its input), and
//!   what is computed from zeros alone (a constant) is removed as long as the output still
//!   depends on the input. A network whose output depends on no input computes a constant: its
//!   canonical graph keeps the zeros and what follows them, with no path from input to output
//!   (not a valid CG for [`Cg::validate`], which asks every node to be reached from an input;
//!   features read it).
//! - one computation written twice is one node, and each op has one spelling (`same.rs`);
//! - what other exporters (tf2onnx) write differently is read as PyTorch writes it
//!   (`foreign.rs`): a BatchNorm as `Mul` + `Add`, zero padding as a `Pad`, an `[N, H, W, C]`
//!   input and its `Transpose`, a final softmax;
//! - what PyTorch writes differently at opsets 9 and earlier is read as it writes it today
//!   (`opsets.rs`): a max pool's end pads, a `Split` as its `Slice`s.
//!
//! The raw graph (what `nape inspect` shows) stays faithful to the file; features read the
//! canonical one.

use super::{Cg, OpKind, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;

impl Cg {
    /// The canonical form of this graph (see the module docs). Node order stays topological.
    pub fn canonical(&self) -> Cg {
        let mut cg = self.clone();
        cg.read_foreign_writings();
        while let Some((w, victim)) = cg.find_foldable() {
            cg.fold_into(w, victim);
        }
        cg.cut_zero_inputs();
        cg.drop_constants();
        while cg.drop_zero_or_unary_add() {}
        cg.drop_dead();
        cg.unify_spellings();
        cg.read_older_opsets();
        cg.merge_duplicates();
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

    /// Removes the edges into Zero nodes: a zero does not depend on its input, and a network
    /// whose output only reaches its input through zeros computes a constant.
    fn cut_zero_inputs(&mut self) {
        let g = &mut self.graph;
        let edges: Vec<_> = g
            .edge_indices()
            .filter(|&e| g.edge_endpoints(e).is_some_and(|(_, t)| g[t].kind == OpKind::Zero))
            .collect();
        for e in edges {
            g.remove_edge(e);
        }
    }

    /// When an output still depends on an input, removes the nodes that no input reaches: the
    /// zeros and what is computed from zeros alone, constants that only shift what they are
    /// added to. A network whose output depends on no input is a constant function; it keeps
    /// its zeros and what follows them.
    fn drop_constants(&mut self) {
        let reached = self.reached_from(OpKind::Input, Direction::Outgoing);
        let g = &self.graph;
        if !g.node_indices().any(|n| g[n].kind == OpKind::Output && reached[n.index()]) {
            return;
        }
        self.remove_unmarked(&reached);
    }

    /// Which nodes (by index) are reached from the nodes of `kind`, following edges `dir`.
    fn reached_from(&self, kind: OpKind, dir: Direction) -> Vec<bool> {
        let g = &self.graph;
        let mut reached = vec![false; g.node_bound()];
        let mut stack: Vec<NodeIndex> = g.node_indices().filter(|&n| g[n].kind == kind).collect();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut reached[n.index()], true) {
                stack.extend(g.neighbors_directed(n, dir));
            }
        }
        reached
    }

    /// Removes every node not marked in `keep`, except Input nodes.
    fn remove_unmarked(&mut self, keep: &[bool]) {
        let g = &mut self.graph;
        let gone: Vec<NodeIndex> =
            g.node_indices().filter(|&n| !keep[n.index()] && g[n].kind != OpKind::Input).collect();
        for n in gone {
            g.remove_node(n);
        }
    }

    /// Cuts one edge from a Zero into a sum with another input (`x + 0 = x`), or splices out
    /// one Add left with a single input of its own shape; whether it changed anything. A Zero
    /// left feeding nothing is removed with the dead nodes.
    fn drop_zero_or_unary_add(&mut self) -> bool {
        let g = &mut self.graph;
        let zero_term = g.edge_indices().find(|&e| {
            let Some((z, t)) = g.edge_endpoints(e) else { return false };
            g[z].kind == OpKind::Zero
                && g[t].kind == OpKind::Add
                && g[t].out_shape() == g[e].shape.as_slice()
                && g.edges_directed(t, Direction::Incoming).any(|i| i.source() != z)
        });
        if let Some(e) = zero_term {
            g.remove_edge(e);
            return true;
        }
        let unary = g.node_indices().find(|&a| {
            // an Add of a constant (a position embedding, a shift) has one input edge too
            if g[a].kind != OpKind::Add || !g[a].operands.is_empty() {
                return false;
            }
            let ins: Vec<_> = g.edges_directed(a, Direction::Incoming).collect();
            matches!(ins.as_slice(), [e] if e.weight().shape.as_slice() == g[a].out_shape())
        });
        let Some(a) = unary else { return false };
        self.splice_out(a);
        true
    }

    /// Removes the nodes from which no Output is reached; Input nodes stay, unless another
    /// input is read (an input nothing reads is not part of the network).
    fn drop_dead(&mut self) {
        let live = self.reached_from(OpKind::Output, Direction::Incoming);
        if live.iter().any(|&l| l) {
            self.remove_unmarked(&live); // (no output at all: nothing to measure against)
        }
        self.drop_unread_inputs();
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
        for (t, mut e) in self.take_consumers(victim) {
            e.src_slot = 0;
            self.graph.add_edge(w, t, e);
        }
        self.graph.remove_node(victim);
    }

    /// Removes `n`'s outgoing edges and returns them (consumer, edge), to be re-added from
    /// whatever now computes `n`'s output.
    pub(super) fn take_consumers(&mut self, n: NodeIndex) -> Vec<(NodeIndex, TensorEdge)> {
        let g = &mut self.graph;
        let ids: Vec<_> = g.edges_directed(n, Direction::Outgoing).map(|e| e.id()).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (_, t) = g.edge_endpoints(id).expect("edge of this graph");
            out.push((t, g.remove_edge(id).expect("edge of this graph")));
        }
        out
    }
}

impl Cg {
    /// A hash of the graph's structure that does not depend on names or node order: each node
    /// starts from its kind, attributes, output shapes and parameter count, then six rounds of
    /// Weisfeiler-Lehman refinement mix in its inputs (by slot) and consumers; the hash is the
    /// MD5 of the sorted final labels. Two files with the same network give the same hash
    /// whatever the exporter named things; use it on [`Cg::canonical`] graphs. Labels are
    /// 64-bit FNV-1a / splitmix64 values, fixed by their definitions (not by a library's
    /// hasher), so the hash is the same across builds and versions.
    pub fn structure_hash(&self) -> String {
        use md5::{Digest, Md5};
        let g = &self.graph;
        let mut label: Vec<u64> = vec![0; g.node_bound()];
        for n in g.node_indices() {
            // FNV-1a of the text "kind|attrs as JSON|out_shapes|params", streamed, not built
            let node = &g[n];
            let mut h = Fnv1a::default();
            let _ = std::fmt::Write::write_fmt(&mut h, format_args!("{}|", node.kind.as_str()));
            let _ = serde_json::to_writer(&mut h, &node.attrs);
            let _ = std::fmt::Write::write_fmt(
                &mut h,
                format_args!("|{:?}|{}", node.out_shapes, node.params),
            );
            label[n.index()] = h.0;
        }
        let mut ins: Vec<(usize, u64)> = Vec::new();
        let mut outs: Vec<u64> = Vec::new();
        for _ in 0..6 {
            let mut next = label.clone();
            for n in g.node_indices() {
                ins.clear();
                ins.extend(
                    g.edges_directed(n, Direction::Incoming)
                        .map(|e| (e.weight().dst_slot, label[e.source().index()])),
                );
                ins.sort_unstable();
                outs.clear();
                outs.extend(
                    g.edges_directed(n, Direction::Outgoing).map(|e| label[e.target().index()]),
                );
                outs.sort_unstable();
                let mut h = mix(label[n.index()], 0x1f);
                for &(slot, l) in &ins {
                    h = mix(mix(h, slot as u64), l);
                }
                h = mix(h, u64::MAX); // between the inputs and the consumers
                for &l in &outs {
                    h = mix(h, l);
                }
                next[n.index()] = h;
            }
            label = next;
        }
        let mut all: Vec<u64> = g.node_indices().map(|n| label[n.index()]).collect();
        all.sort_unstable();
        let bytes: Vec<u8> = all.iter().flat_map(|l| l.to_le_bytes()).collect();
        format!("{:x}", Md5::digest(&bytes))
    }
}

/// 64-bit FNV-1a of a string: a seed per name that does not depend on any order.
pub fn fnv1a(s: &str) -> u64 {
    let mut h = Fnv1a::default();
    h.bytes(s.as_bytes());
    h.0
}

/// 64-bit FNV-1a of the bytes written to it, as text (`fmt::Write`) or as bytes (`io::Write`).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Mixes `v` into `h` (splitmix64's finaliser on their combination).
fn mix(h: u64, v: u64) -> u64 {
    let mut z = h.rotate_left(5) ^ v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

    #[test]
    fn structure_hash_ignores_names_and_sees_structure() {
        let a = conv_bn(true);
        let mut renamed = a.clone();
        for n in renamed.graph.node_weights_mut() {
            n.name = format!("other/{}", n.name);
        }
        for e in renamed.graph.edge_weights_mut() {
            e.name = format!("t/{}", e.name);
        }
        assert_eq!(a.structure_hash(), renamed.structure_hash());
        assert_eq!(a.structure_hash().len(), 32);
        assert_ne!(a.structure_hash(), conv_bn(false).structure_hash());
        assert_eq!(a.canonical().structure_hash(), conv_bn(false).canonical().structure_hash());
    }
    #[test]
    fn an_add_of_a_constant_is_not_an_add_left_with_one_input() {
        // a position embedding added to the patches: one input edge and a parameter operand
        let mut cg = conv_bn(false);
        let relu = cg.graph.node_indices().find(|&n| cg.graph[n].kind == OpKind::Relu).unwrap();
        let mut add = OpNode::new(OpKind::Add, "pos");
        add.out_shapes = vec![vec![1, 8, 4, 4]];
        add.params = 128;
        add.operands = vec![crate::graph::Operand {
            slot: 1,
            name: "pos_embedding".into(),
            shape: vec![1, 8, 4, 4],
            param: true,
            value: None,
        }];
        cg.graph[relu] = add;
        let c = cg.canonical();
        assert!(c.nodes().any(|(_, n)| n.kind == OpKind::Add));
        assert_eq!(c.summary().params, 8 * 3 * 9 + 8 + 128);
    }
}
