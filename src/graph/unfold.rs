//! BatchNorm put back where an eval-mode export folded it away, for running the network as it
//! was built (`nape proxies`, `--folded-bn`).
//!
//! PyTorch's eval-mode ONNX export (TorchScript and dynamo alike) folds every BatchNorm into
//! the convolution before it, which gains a bias. The proxies' reference code scores the
//! network as built, its BatchNorms in training mode; run as such a file holds it, a deep
//! network has no normalisation, and its gradients and activation codes are another network's
//! (a ResNet-18: snip 2.35 against 414, docs/proxies.md).
//!
//! Which biases are folded BatchNorms, the exporters say by their names ([`bias_origin`]): a
//! bias computed at export is named `onnx::Conv_N` by TorchScript and `<layer>.weight_bias` by
//! dynamo, and tf2onnx names it after the BatchNorm (`.../batch_normalization/...`); a bias
//! the network has as a parameter keeps the parameter's name (`features.0.bias`: VGG's,
//! SqueezeNet's, a squeeze-excitation's). Where the name says neither, the structure can only
//! suggest it ([`Cg::folded_convs`] with `guess`): a convolution over a map larger than 1 x 1
//! that some weighted layer follows.
//!
//! [`Cg::restore_batchnorms`] gives each folded convolution back the network PyTorch built:
//! the convolution without its bias (`bias=False`, as before a BatchNorm), then a BatchNorm of
//! scale 1 and shift 0 over its channels, so the parameters, their order and the proxies'
//! seeded weights are those of the same network exported in training mode. A BatchNorm that
//! tf2onnx writes in inference form, a per-channel `Mul` and `Add` named after it, becomes the
//! BatchNorm it was.

use super::{Cg, OpKind, OpNode, Operand, TensorEdge};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use std::collections::HashMap;

/// What the name of a convolution's bias says of where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasOrigin {
    /// Computed at export from a BatchNorm folded into the convolution.
    Folded,
    /// A parameter of the network (`<layer>.bias`).
    Parameter,
    /// The name says neither.
    Unnamed,
}

/// Whether `name` is a BatchNorm's (tf2onnx names what it writes for one after it).
fn names_a_batchnorm(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("batch_norm") || lower.contains("batchnorm")
}

/// Where a bias named `name` came from (module docs).
pub fn bias_origin(name: &str) -> BiasOrigin {
    if name.starts_with("onnx::") || name.ends_with(".weight_bias") || names_a_batchnorm(name) {
        BiasOrigin::Folded
    } else if name.ends_with(".bias") || name.ends_with("/bias") {
        BiasOrigin::Parameter
    } else {
        BiasOrigin::Unnamed
    }
}

impl Cg {
    /// The convolutions whose bias is a folded BatchNorm, in node order: those whose bias's
    /// name says so, and with `guess` those whose name says nothing but whose place suggests it
    /// (module docs). None that a normalisation already reads.
    pub fn folded_convs(&self, guess: bool) -> Vec<NodeIndex> {
        let g = &self.graph;
        let mut weighted_after = vec![false; petgraph::visit::NodeIndexable::node_bound(g)];
        let order: Vec<NodeIndex> = g.node_indices().collect();
        for &n in order.iter().rev() {
            weighted_after[n.index()] = g
                .neighbors_directed(n, Direction::Outgoing)
                .any(|s| g[s].kind.is_weighted() || weighted_after[s.index()]);
        }
        let normalised = |n: NodeIndex| {
            g.neighbors_directed(n, Direction::Outgoing).any(|s| {
                use OpKind::*;
                matches!(g[s].kind, BatchNorm | InstanceNorm | GroupNorm | LayerNorm)
            })
        };
        let suggested = |node: &OpNode, n: NodeIndex| {
            let out = node.out_shape();
            out.len() >= 3 && out[2..].iter().product::<usize>() > 1 && weighted_after[n.index()]
        };
        order
            .into_iter()
            .filter(|&n| {
                let node = &g[n];
                let Some(bias) = node.operands.iter().find(|o| o.slot == 2 && o.param) else {
                    return false;
                };
                let folded = match bias_origin(&bias.name) {
                    BiasOrigin::Folded => true,
                    BiasOrigin::Parameter => false,
                    BiasOrigin::Unnamed => guess && suggested(node, n),
                };
                node.onnx_op == "Conv" && node.out_shape().len() >= 3 && folded && !normalised(n)
            })
            .collect()
    }

    /// Puts a BatchNorm back after every convolution of [`Cg::folded_convs`], and in place of
    /// every BatchNorm written as a per-channel `Mul` and `Add` (tf2onnx's inference form,
    /// named after the BatchNorm; with `guess`, any such pair); how many. Node order stays
    /// topological, each BatchNorm right after its convolution or where its `Mul` was.
    pub fn restore_batchnorms(&mut self, guess: bool) -> usize {
        let affine = self.restore_affine_batchnorms(guess);
        let folded = self.folded_convs(guess);
        if folded.is_empty() {
            return affine;
        }
        let old = std::mem::take(&mut self.graph);
        let mut g = StableDiGraph::with_capacity(old.node_count() + folded.len(), 0);
        // where an old node's inputs now go, and where its outputs now come from
        let (mut into, mut from) = (HashMap::new(), HashMap::new());
        for n in old.node_indices() {
            let node = old[n].clone();
            if folded.binary_search(&n).is_err() {
                let k = g.add_node(node);
                into.insert(n, k);
                from.insert(n, k);
                continue;
            }
            let (conv, bn, edge) = unfold(node);
            let (c, b) = (g.add_node(conv), g.add_node(bn));
            g.add_edge(c, b, edge);
            into.insert(n, c);
            from.insert(n, b);
        }
        for e in (&old).edge_references() {
            g.add_edge(from[&e.source()], into[&e.target()], e.weight().clone());
        }
        self.graph = g;
        affine + folded.len()
    }

    /// Each per-channel `Mul` + `Add` that is a BatchNorm in inference form (its `Mul` named
    /// after one, or any with `guess`) becomes the BatchNorm it was, in training mode; how many.
    fn restore_affine_batchnorms(&mut self, guess: bool) -> usize {
        let named = |n: &OpNode| guess || names_a_batchnorm(&n.name);
        let mut count = 0;
        while let Some((mul, add)) = self.find_affine_where(named) {
            self.splice_out(add);
            let node = &self.graph[mul];
            let out = node.out_shape().to_vec();
            let bn = batchnorm(&node.name, &out);
            self.graph[mul] = bn;
            count += 1;
        }
        count
    }
}

/// A training-mode BatchNorm named `name` over a tensor of shape `out` (channels on axis 1):
/// scale and shift as parameters, running statistics without values (PyTorch's at
/// construction), 2 FLOPs per element as the reader counts one.
fn batchnorm(name: &str, out: &[usize]) -> OpNode {
    let (channels, elems) = (out[1], out.iter().product::<usize>() as u64);
    let operand = |slot: usize, what: &str, param: bool| Operand {
        slot,
        name: format!("{name}.{what}"),
        shape: vec![channels],
        param,
        value: None,
    };
    let mut bn = OpNode::new(OpKind::BatchNorm, name);
    bn.onnx_op = "BatchNormalization".into();
    bn.in_shapes = vec![out.to_vec()];
    bn.out_shapes = vec![out.to_vec()];
    bn.params = 2 * channels as u64;
    bn.flops = 2 * elems;
    bn.act_slots = vec![0];
    bn.operands = vec![
        operand(1, "weight", true),
        operand(2, "bias", true),
        operand(3, "running_mean", false),
        operand(4, "running_var", false),
    ];
    bn
}

/// A convolution whose bias was a folded BatchNorm, as it was built: without the bias, then the
/// BatchNorm, and the edge between them.
fn unfold(mut conv: OpNode) -> (OpNode, OpNode, TensorEdge) {
    let out = conv.out_shape().to_vec();
    let (channels, elems) = (out[1], out.iter().product::<usize>() as u64);
    conv.operands.retain(|o| o.slot != 2);
    conv.params = conv.params.saturating_sub(channels as u64);
    conv.flops = conv.flops.saturating_sub(elems);
    conv.attrs.bias = Some(false);
    let name = format!("{}/BatchNorm (restored)", conv.name);
    let bn = batchnorm(&name, &out);
    let edge = TensorEdge { src_slot: 0, dst_slot: 0, shape: out, name: format!("{name}.input") };
    (conv, bn, edge)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// input -> conv (biased) -> relu -> conv (biased) -> relu -> linear -> output, 8 x 8 maps.
    fn folded_net() -> Cg {
        let mut cg = Cg::new("t");
        let shape = vec![1, 4, 8, 8];
        let node = |kind: OpKind, onnx: &str, name: &str, params: u64| {
            let mut n = OpNode::new(kind, name);
            n.onnx_op = onnx.into();
            n.in_shapes = vec![shape.clone()];
            n.out_shapes = vec![shape.clone()];
            n.params = params;
            n
        };
        let conv = |name: &str| {
            let mut n = node(OpKind::Conv, "Conv", name, 4 * 4 * 9 + 4);
            n.flops = 2 * 4 * 9 * 256 + 256;
            n.act_slots = vec![0];
            for (slot, shape) in [(1, vec![4, 4, 3, 3]), (2, vec![4])] {
                let name = format!("{name}.{slot}");
                n.operands.push(Operand { slot, name, shape, param: true, value: None });
            }
            n
        };
        let nodes = [
            node(OpKind::Input, "", "x", 0),
            conv("c1"),
            node(OpKind::Relu, "Relu", "r1", 0),
            conv("c2"),
            node(OpKind::Relu, "Relu", "r2", 0),
            node(OpKind::Linear, "Gemm", "fc", 10),
            node(OpKind::Output, "", "y", 0),
        ];
        let ids: Vec<NodeIndex> = nodes.into_iter().map(|n| cg.graph.add_node(n)).collect();
        for w in ids.windows(2) {
            let e = TensorEdge { src_slot: 0, dst_slot: 0, shape: shape.clone(), name: "t".into() };
            cg.graph.add_edge(w[0], w[1], e);
        }
        cg
    }

    #[test]
    fn each_folded_convolution_gets_its_batchnorm_back_in_order() {
        let mut cg = folded_net();
        let before = cg.summary();
        assert!(cg.folded_convs(false).is_empty(), "the names say nothing");
        assert_eq!(cg.folded_convs(true).len(), 2);
        assert_eq!(cg.restore_batchnorms(true), 2);
        let kinds: Vec<&str> = cg.graph.node_weights().map(|n| n.kind.as_str()).collect();
        let want = ["Input", "Conv", "BatchNorm", "Relu", "Conv", "BatchNorm", "Relu", "Linear"];
        assert_eq!(&kinds[..8], want);
        cg.validate().unwrap();
        let conv = cg.graph.node_weights().nth(1).unwrap();
        assert!(conv.operands.iter().all(|o| o.slot != 2) && conv.attrs.bias == Some(false));
        // a bias of 4 becomes a BatchNorm of 8: the training-mode network's count
        assert_eq!(cg.summary().params, before.params + 2 * 4);
        assert_eq!(cg.restore_batchnorms(true), 0, "nothing left to restore");
    }

    #[test]
    fn without_a_name_the_last_weighted_layer_and_a_normalised_one_keep_their_bias() {
        let mut cg = folded_net();
        // c2 -> fc becomes c2 -> r2 -> output: c2 is the last weighted layer of its path
        let fc = cg.graph.node_indices().find(|&n| cg.graph[n].name == "fc").unwrap();
        cg.splice_out(fc);
        let c1 = cg.graph.node_indices().find(|&n| cg.graph[n].name == "c1").unwrap();
        assert_eq!(cg.folded_convs(true), vec![c1]);
        // and a conv that a BatchNorm reads already has its own
        let r1 = cg.graph.node_indices().find(|&n| cg.graph[n].name == "r1").unwrap();
        cg.graph[r1].kind = OpKind::BatchNorm;
        assert!(cg.folded_convs(true).is_empty());
    }

    #[test]
    fn the_exporters_names_decide_where_they_say() {
        use BiasOrigin::*;
        for (name, origin) in [
            ("onnx::Conv_64", Folded),                                    // TorchScript
            ("stem.0.0.weight_bias", Folded),                             // dynamo
            ("functional_1/batch_normalization_1/batchnorm/sub", Folded), // tf2onnx
            ("features.0.bias", Parameter),
            ("conv1/bias", Parameter),
            ("functional_1/conv2d_2_1/Squeeze", Unnamed),
            ("c1.2", Unnamed),
        ] {
            assert_eq!(bias_origin(name), origin, "{name}");
        }
        let mut cg = folded_net();
        for node in cg.graph.node_weights_mut() {
            for o in &mut node.operands {
                if o.slot == 2 {
                    o.name =
                        if node.name == "c1" { "onnx::Conv_7".into() } else { "c2.bias".into() };
                }
            }
        }
        let c1 = cg.graph.node_indices().find(|&n| cg.graph[n].name == "c1").unwrap();
        assert_eq!(cg.folded_convs(false), vec![c1]);
        assert_eq!(cg.folded_convs(true), vec![c1], "a parameter's name is not guessed over");
    }
}
