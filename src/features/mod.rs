//! Features: what the encoder reads about one network (pipeline stage 4, above
//! [`crate::dataset`], below exec/proxies/encoder).
//!
//! [`encode`] turns a [`Cg`] and the record's proxy scores into [`GraphFeatures`]: per-node
//! GENNAPE-style features, the data-flow edges, graph-level features and the tokens of an
//! ONNX-Net-style text serialisation ([`text`]). The graph is canonicalised first
//! ([`Cg::canonical`]), so a network exported with or without folded BatchNorm gives the same
//! features. Everything here is pure Rust and deterministic: the same graph and proxies give
//! the same bytes.
//!
//! **Node features** (`NODE_DIM` = 34 per node, in the CG's topological order). Shapes are read
//! in ONNX's NC... layout: C = dim 1, H = dim 2, W = the product of the dims after 2 (1 when
//! absent); a rank-1 tensor is C only. The input shape is the first activation input's (an
//! Input node uses its own output); the output shape is the first output's (an Output node uses
//! its input). As in GENNAPE (`max_h = max_w = 256`, `max_hidden_size = 512`), values are
//! divided by their scale and clamped at 10 ("values up to 10x allowed"):
//!
//! | cols | feature | normalisation |
//! |---|---|---|
//! | 0-5 | H_in, H_out, W_in, W_out, C_in, C_out | /256, /256, /256, /256, /512, /512 |
//! | 6-13 | kernel height, one-hot over 8 classes | class 0 = no kernel, k for 1..=6, 7 for k >= 7 (a Linear is 1x1) |
//! | 14-21 | kernel width, one-hot, same classes | |
//! | 22-23 | stride along H, along W | /4 (0 when the op has none) |
//! | 24 | dilation - 1 (largest axis) | /4 |
//! | 25 | depthwise flag (groups > 1 and groups = C_in) | 0/1 |
//! | 26 | log2(groups) | /9 (512 groups = 1) |
//! | 27-28 | bias one-hot of weighted ops: `[1,0]` no bias, `[0,1]` bias; `[0,0]` otherwise | |
//! | 29 | weighted op (Conv, ConvTranspose, Linear) | 0/1 |
//! | 30 | log10(1 + parameters) | /8 |
//! | 31 | log10(1 + FLOPs) | /10 |
//! | 32-33 | in-degree, out-degree | /8 |
//!
//! **Graph features** (`GLOBAL_DIM`): 26 scalars, then the op-kind histogram (fraction of nodes
//! of each of the `OP_VOCAB` op indices), then one value and one presence flag per name of
//! [`GLOBAL_PROXIES`]. The scalars, in order: log10(1+params)/8, log10(1+FLOPs)/11,
//! log10(1+MACs)/11, log2(1+depth)/10, log2(1+nodes)/12, log2(1+edges)/12,
//! log2(1+max channels)/12, input H/256, W/256, C/512 (first Input node), log2(1+output
//! features)/10, log10(1+largest activation)/8; degree statistics in the spirit of FLASH's
//! NN-Degree: edges per node /4, max in-degree /8, max out-degree /8, fraction of merge nodes
//! (in-degree > 1), fraction of branch nodes (out-degree > 1), fraction of skip edges (spanning
//! more than one level of the longest-path levelling), shortest over longest input-to-output
//! path, log2(1+widest level)/8; and conv statistics: fraction of weighted nodes, and among
//! convolutions the fractions with kernel 1, 3, >= 5, depthwise, and among ops with a stride the
//! fraction with a stride > 1. Proxy values go through a signed log, `sign(x) log10(1+|x|)`,
//! so that values of any magnitude stay finite and ordered; a missing or non-finite proxy is 0
//! with presence 0. Every value of every feature is finite.

pub mod graf;
pub mod sample;
pub mod text;

pub use text::{to_text, tokenize};

use crate::graph::{Cg, OpKind, OpNode, ALL_KINDS};
use petgraph::visit::NodeIndexable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the encoder reads about one network, in plain vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphFeatures {
    /// Node count (nodes in the CG's topological order).
    pub n_nodes: usize,
    /// Per node: its op's index in the vocabulary, 0..OP_VOCAB (0 = out of vocabulary).
    pub op: Vec<i64>,
    /// Per node: NODE_DIM normalised numeric features, row-major [n_nodes * NODE_DIM].
    pub node: Vec<f32>,
    /// Directed data-flow edges (source position, destination position).
    pub edges: Vec<(u32, u32)>,
    /// Graph-level features [GLOBAL_DIM] (normalised: log-scaled counts, proxies, presence flags).
    pub global: Vec<f32>,
    /// Token ids of the ONNX-Net-style text serialisation, 0..TOKEN_VOCAB, at most MAX_TOKENS.
    pub tokens: Vec<u32>,
}

/// The op kinds the features name, in vocabulary order: the graph's kinds as of
/// [`FEATURES_VERSION`] 4. Kinds the graph gained later (recurrent layers, Scatter) read as out
/// of vocabulary, as any op no model of this version was trained on, until a new version takes
/// them in; so the graph's vocabulary grows without invalidating trained models.
pub const FEATURE_KINDS: &[OpKind] = ALL_KINDS.split_at(FEATURE_KIND_COUNT).0;
const FEATURE_KIND_COUNT: usize = 68;
/// Size of the op vocabulary: every kind of [`FEATURE_KINDS`] plus index 0 for out-of-vocabulary ops.
pub const OP_VOCAB: usize = FEATURE_KINDS.len() + 1;
/// Numeric features per node (layout in the module docs).
pub const NODE_DIM: usize = 34;
/// Graph-level scalar features before the op histogram.
const GLOBAL_SCALARS: usize = 26;
/// Graph-level features: scalars, op-kind histogram, proxy values and presence flags.
pub const GLOBAL_DIM: usize = GLOBAL_SCALARS + OP_VOCAB + 2 * GLOBAL_PROXIES.len();
/// Size of the token vocabulary of [`tokenize`].
pub const TOKEN_VOCAB: usize = text::VOCAB_SIZE;
/// Most tokens kept per network (see [`text`] for why 512).
pub const MAX_TOKENS: usize = 512;

/// Proxy names read from a record's proxies map into `global`, in this order (NASLib names, values
/// as the proxies module stores them: synflow as log10). A missing proxy is 0 with its presence flag 0.
pub const GLOBAL_PROXIES: &[&str] = &[
    "params",
    "flops",
    "synflow",
    "snip",
    "grad_norm",
    "jacov",
    "fisher",
    "grasp",
    "nwot",
    "swap",
    "zico",
    "epsinas",
    "l2_norm",
    "plain",
];

/// Position of log10(1 + FLOPs)/11 in [`GraphFeatures::global`] (see [`log_flops`]).
const GLOBAL_LOG_FLOPS: usize = 1;

/// log10(1 + FLOPs) of the graph the features were computed from (the canonical graph: only
/// what the output depends on), read back from its graph-level features.
pub fn log_flops(g: &GraphFeatures) -> f64 {
    g.global.get(GLOBAL_LOG_FLOPS).map_or(0.0, |&v| f64::from(v) * 11.0)
}

/// log2(1 + depth) of the canonical graph (its longest input-to-output path in compute
/// nodes), read back from its graph-level features (stored / 10).
pub fn log_depth(g: &GraphFeatures) -> f64 {
    g.global.get(GLOBAL_LOG_DEPTH).map_or(0.0, |&v| f64::from(v) * 10.0)
}

/// Position of log2(1 + depth)/10 in [`GraphFeatures::global`] (see [`log_depth`]).
const GLOBAL_LOG_DEPTH: usize = 3;

/// Values are clamped here after normalisation (GENNAPE allows up to 10x the scale).
const CLAMP: f32 = 10.0;

/// The op index used in features: 1 + the kind's index in [`FEATURE_KINDS`], or 0 for a kind
/// outside it (`Unknown`, or added to the graph after this features version).
pub fn op_index(kind: &OpKind) -> i64 {
    match kind.index() {
        i if i < FEATURE_KINDS.len() => i as i64 + 1,
        _ => 0,
    }
}

/// The op index a pooling reads as where the pooling's kind is not told apart
/// ([`crate::encoder::EncoderConfig::pools_as_one`]): an average pool as a max pool, a global max
/// pool as a global average pool; every other op as itself.
pub fn pool_class(o: i64) -> i64 {
    POOL_SIBLINGS.iter().find(|(a, _)| op_index(a) == o).map_or(o, |(_, b)| op_index(b))
}

/// The poolings of one extent, each with the sibling it reads as ([`pool_class`]).
pub const POOL_SIBLINGS: [(OpKind, OpKind); 2] =
    [(OpKind::AvgPool, OpKind::MaxPool), (OpKind::GlobalMaxPool, OpKind::GlobalAvgPool)];

/// The column of op index `o`'s share in [`GraphFeatures::global`]'s op-kind histogram.
pub fn histogram_column(o: i64) -> usize {
    GLOBAL_SCALARS + o as usize
}

/// Features of one network: canonicalises `cg`, then computes node features, edges, graph
/// features (with the proxies of [`GLOBAL_PROXIES`] read from `proxies`) and text tokens.
pub fn encode(cg: &Cg, proxies: &BTreeMap<String, f64>) -> GraphFeatures {
    encode_canonical(&cg.canonical(), proxies)
}

/// [`encode`] of a graph already in canonical form ([`Cg::canonical`]), for callers that need
/// the canonical graph for something else too.
pub fn encode_canonical(cg: &Cg, proxies: &BTreeMap<String, f64>) -> GraphFeatures {
    let g = &cg.graph;
    let order: Vec<_> = g.node_indices().collect();
    let mut pos = vec![u32::MAX; g.node_bound()];
    for (i, &n) in order.iter().enumerate() {
        pos[n.index()] = i as u32;
    }
    let mut op = Vec::with_capacity(order.len());
    let mut node = Vec::with_capacity(order.len() * NODE_DIM);
    let mut edges = Vec::new();
    let mut indeg = vec![0usize; order.len()];
    let mut outdeg = vec![0usize; order.len()];
    for (i, &n) in order.iter().enumerate() {
        for (src, _) in cg.inputs_of(n) {
            let s = pos[src.index()];
            edges.push((s, i as u32));
            indeg[i] += 1;
            outdeg[s as usize] += 1;
        }
    }
    for (i, &n) in order.iter().enumerate() {
        op.push(op_index(&g[n].kind));
        node.extend_from_slice(&node_features(&g[n], indeg[i], outdeg[i]));
    }
    let global = global_features(cg, &op, &edges, &indeg, &outdeg, proxies);
    let tokens = tokenize(&to_text(cg));
    GraphFeatures { n_nodes: order.len(), op, node, edges, global, tokens }
}

/// `v / scale`, clamped to `[0, CLAMP]` (0 for anything not finite).
fn norm(v: f64, scale: f64) -> f32 {
    let x = (v / scale) as f32;
    if x.is_finite() {
        x.clamp(0.0, CLAMP)
    } else {
        0.0
    }
}

/// (C, H, W) of a shape in NC... layout (see the module docs).
pub(crate) fn chw(s: &[usize]) -> (usize, usize, usize) {
    match s.len() {
        0 => (0, 0, 0),
        1 => (s[0], 1, 1),
        2 => (s[1], 1, 1),
        3 => (s[1], s[2], 1),
        _ => (s[1], s[2], s[3..].iter().product()),
    }
}

/// The shape a node reads (its own output for an Input node).
fn in_shape(n: &OpNode) -> &[usize] {
    n.in_shapes.first().map(|s| s.as_slice()).unwrap_or_else(|| n.out_shape())
}

/// The shape a node writes (its input for an Output node).
fn out_shape(n: &OpNode) -> &[usize] {
    if n.out_shapes.is_empty() {
        n.in_shapes.first().map(|s| s.as_slice()).unwrap_or(&[])
    } else {
        n.out_shape()
    }
}

/// Kernel class: 0 none, k for 1..=6, 7 for 7 and more.
fn kernel_class(k: usize) -> usize {
    k.min(7)
}

/// (kernel height, kernel width) of a node; a Linear is 1x1, an op without kernel (0, 0).
pub(crate) fn kernel_hw(n: &OpNode) -> (usize, usize) {
    match n.attrs.kernel.as_slice() {
        [] if n.kind == OpKind::Linear => (1, 1),
        [] => (0, 0),
        [k] => (*k, 1),
        [h, w, ..] => (*h, *w),
    }
}

fn node_features(n: &OpNode, indeg: usize, outdeg: usize) -> [f32; NODE_DIM] {
    let mut f = [0f32; NODE_DIM];
    let (ci, hi, wi) = chw(in_shape(n));
    let (co, ho, wo) = chw(out_shape(n));
    f[0] = norm(hi as f64, 256.0);
    f[1] = norm(ho as f64, 256.0);
    f[2] = norm(wi as f64, 256.0);
    f[3] = norm(wo as f64, 256.0);
    f[4] = norm(ci as f64, 512.0);
    f[5] = norm(co as f64, 512.0);
    let (kh, kw) = kernel_hw(n);
    f[6 + kernel_class(kh)] = 1.0;
    f[14 + kernel_class(kw)] = 1.0;
    let s = &n.attrs.stride;
    f[22] = norm(s.first().copied().unwrap_or(0) as f64, 4.0);
    f[23] = norm(s.get(1).or(s.first()).copied().unwrap_or(0) as f64, 4.0);
    let dil = n.attrs.dilation.iter().copied().max().unwrap_or(1);
    f[24] = norm(dil.saturating_sub(1) as f64, 4.0);
    let groups = n.attrs.groups.unwrap_or(1).max(1);
    f[25] = f32::from(u8::from(groups > 1 && groups == ci));
    f[26] = norm((groups as f64).log2(), 9.0);
    if n.kind.is_weighted() {
        let bias = n.attrs.bias == Some(true);
        f[27] = f32::from(u8::from(!bias));
        f[28] = f32::from(u8::from(bias));
        f[29] = 1.0;
    }
    f[30] = norm((1.0 + n.params as f64).log10(), 8.0);
    f[31] = norm((1.0 + n.flops as f64).log10(), 10.0);
    f[32] = norm(indeg as f64, 8.0);
    f[33] = norm(outdeg as f64, 8.0);
    f
}

/// `sign(x) log10(1 + |x|)`: finite and order-preserving for any finite x.
pub fn signed_log(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p() / std::f64::consts::LN_10
}

fn frac(a: usize, b: usize) -> f32 {
    if b == 0 {
        0.0
    } else {
        a as f32 / b as f32
    }
}

fn global_features(
    cg: &Cg,
    op: &[i64],
    edges: &[(u32, u32)],
    indeg: &[usize],
    outdeg: &[usize],
    proxies: &BTreeMap<String, f64>,
) -> Vec<f32> {
    let g = &cg.graph;
    let nodes: Vec<&OpNode> = g.node_indices().map(|i| &g[i]).collect();
    debug_assert_eq!(nodes.len(), op.len(), "one op index per node");
    let mut f = Vec::with_capacity(GLOBAL_DIM);
    size_features(cg, &nodes, &mut f);
    path_features(&nodes, edges, indeg, outdeg, &mut f);
    conv_features(&nodes, &mut f);
    debug_assert_eq!(f.len(), GLOBAL_SCALARS);
    op_and_proxy_features(op, proxies, &mut f);
    debug_assert_eq!(f.len(), GLOBAL_DIM);
    f
}

/// `norm(log10(1 + x), scale)`.
fn log10(x: f64, scale: f64) -> f32 {
    norm((1.0 + x).log10(), scale)
}

/// `norm(log2(1 + x), scale)`.
fn log2(x: f64, scale: f64) -> f32 {
    norm((1.0 + x).log2(), scale)
}

/// Totals (params, FLOPs, MACs, depth, size, widest layer), the input's C, H, W, the output's
/// width and the largest activation.
fn size_features(cg: &Cg, nodes: &[&OpNode], f: &mut Vec<f32>) {
    let s = cg.summary();
    f.push(log10(s.params as f64, 8.0));
    debug_assert_eq!(f.len(), GLOBAL_LOG_FLOPS);
    f.push(log10(s.flops as f64, 11.0));
    f.push(log10(s.macs as f64, 11.0));
    debug_assert_eq!(f.len(), GLOBAL_LOG_DEPTH);
    f.push(log2(s.depth as f64, 10.0));
    f.push(log2(s.nodes as f64, 12.0));
    f.push(log2(s.edges as f64, 12.0));
    f.push(log2(s.max_channels as f64, 12.0));
    let input = nodes.iter().find(|n| n.kind == OpKind::Input).map(|n| chw(n.out_shape()));
    let (c, h, w) = input.unwrap_or((0, 0, 0));
    f.push(norm(h as f64, 256.0));
    f.push(norm(w as f64, 256.0));
    f.push(norm(c as f64, 512.0));
    let out_features = nodes
        .iter()
        .filter(|n| n.kind == OpKind::Output)
        .map(|n| chw(out_shape(n)).0)
        .max()
        .unwrap_or(0);
    f.push(log2(out_features as f64, 10.0));
    f.push(log10(s.max_activation.0 as f64, 8.0));
}

/// Degree statistics (FLASH's NN-Degree in spirit), skip connections, shortest over longest
/// path and the widest level.
fn path_features(
    nodes: &[&OpNode],
    edges: &[(u32, u32)],
    indeg: &[usize],
    outdeg: &[usize],
    f: &mut Vec<f32>,
) {
    let n = nodes.len();
    f.push(norm(frac(edges.len(), n) as f64, 4.0));
    f.push(norm(indeg.iter().copied().max().unwrap_or(0) as f64, 8.0));
    f.push(norm(outdeg.iter().copied().max().unwrap_or(0) as f64, 8.0));
    f.push(frac(indeg.iter().filter(|&&d| d > 1).count(), n));
    f.push(frac(outdeg.iter().filter(|&&d| d > 1).count(), n));
    // longest-path and shortest-path levels from the inputs (edges go forward in position)
    let mut long = vec![0usize; n];
    let mut short = vec![usize::MAX; n];
    let mut by_dst: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        by_dst[b as usize].push(a as usize);
    }
    for i in 0..n {
        if by_dst[i].is_empty() {
            short[i] = 0;
        } else {
            long[i] = by_dst[i].iter().map(|&p| long[p] + 1).max().unwrap_or(0);
            short[i] = by_dst[i].iter().map(|&p| short[p].saturating_add(1)).min().unwrap_or(0);
        }
    }
    let skips = edges.iter().filter(|&&(a, b)| long[a as usize] + 1 < long[b as usize]).count();
    f.push(frac(skips, edges.len()));
    let outs: Vec<usize> = (0..n).filter(|&i| nodes[i].kind == OpKind::Output).collect();
    let longest = outs.iter().map(|&i| long[i]).max().unwrap_or(0);
    let shortest = outs.iter().map(|&i| short[i]).min().unwrap_or(0);
    f.push(if longest == 0 { 0.0 } else { norm(shortest as f64 / longest as f64, 1.0) });
    let mut width = BTreeMap::new();
    for &l in &long {
        *width.entry(l).or_insert(0usize) += 1;
    }
    f.push(log2(width.values().copied().max().unwrap_or(0) as f64, 8.0));
}

/// The share of weighted ops, and of convolutions by kernel size, depthwise and strided.
fn conv_features(nodes: &[&OpNode], f: &mut Vec<f32>) {
    let n = nodes.len();
    let weighted = nodes.iter().filter(|n| n.kind.is_weighted()).count();
    f.push(frac(weighted, n));
    let convs: Vec<&&OpNode> =
        nodes.iter().filter(|n| matches!(n.kind, OpKind::Conv | OpKind::ConvTranspose)).collect();
    let k_of = |n: &OpNode| {
        let (h, w) = kernel_hw(n);
        h.max(w)
    };
    f.push(frac(convs.iter().filter(|n| k_of(n) == 1).count(), convs.len()));
    f.push(frac(convs.iter().filter(|n| k_of(n) == 3).count(), convs.len()));
    f.push(frac(convs.iter().filter(|n| k_of(n) >= 5).count(), convs.len()));
    let depthwise = convs
        .iter()
        .filter(|n| {
            let g = n.attrs.groups.unwrap_or(1);
            g > 1 && g == chw(in_shape(n)).0
        })
        .count();
    f.push(frac(depthwise, convs.len()));
    let strided: Vec<&&OpNode> = nodes.iter().filter(|n| !n.attrs.stride.is_empty()).collect();
    f.push(frac(
        strided.iter().filter(|n| n.attrs.stride.iter().any(|&s| s > 1)).count(),
        strided.len(),
    ));
}

/// The op-kind histogram, then the proxies and their presence flags.
fn op_and_proxy_features(op: &[i64], proxies: &BTreeMap<String, f64>, f: &mut Vec<f32>) {
    let n = op.len();
    let mut hist = vec![0usize; OP_VOCAB];
    for &o in op {
        hist[o as usize] += 1;
    }
    f.extend(hist.iter().map(|&c| frac(c, n)));

    // proxies, then presence flags
    let mut present = Vec::with_capacity(GLOBAL_PROXIES.len());
    for name in GLOBAL_PROXIES {
        match proxies.get(*name).copied().filter(|v| v.is_finite()) {
            Some(v) => {
                f.push(signed_log(v) as f32);
                present.push(1.0);
            }
            None => {
                f.push(0.0);
                present.push(0.0);
            }
        }
    }
    f.extend(present);
}

/// Version of the features; bump it whenever a column, scale or token id changes, or the graph
/// they read does (the canonical form), so a checkpoint trained on older features is refused
/// rather than misread, and cached features are rebuilt. 2: `none` zeros dropped; 3: zeros
/// cut from their inputs; 4: a computation written twice is one node, one spelling per op.
pub const FEATURES_VERSION: u32 = 4;

/// What a checkpoint's `meta.json` records about the features it was trained on: layout sizes,
/// the op vocabulary, the graph-feature names and the proxies read. [`FeatureSpec::current`]
/// describes this build; compare it with a checkpoint's copy before predicting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// [`FEATURES_VERSION`].
    pub version: u32,
    /// [`NODE_DIM`].
    pub node_dim: usize,
    /// [`GLOBAL_DIM`].
    pub global_dim: usize,
    /// Op names by feature index (index 0 is `<unknown>`), [`OP_VOCAB`] of them.
    pub op_vocab: Vec<String>,
    /// Graph-feature names, [`GLOBAL_DIM`] of them.
    pub global_names: Vec<String>,
    /// [`GLOBAL_PROXIES`].
    pub proxies: Vec<String>,
    /// [`TOKEN_VOCAB`].
    pub token_vocab: usize,
    /// [`MAX_TOKENS`].
    pub max_tokens: usize,
}

impl FeatureSpec {
    /// The feature layout of this build.
    pub fn current() -> FeatureSpec {
        let mut op_vocab = vec!["<unknown>".to_string()];
        op_vocab.extend(FEATURE_KINDS.iter().map(|k| k.as_str().to_string()));
        FeatureSpec {
            version: FEATURES_VERSION,
            node_dim: NODE_DIM,
            global_dim: GLOBAL_DIM,
            op_vocab,
            global_names: global_names(),
            proxies: GLOBAL_PROXIES.iter().map(|p| p.to_string()).collect(),
            token_vocab: TOKEN_VOCAB,
            max_tokens: MAX_TOKENS,
        }
    }
}

/// The names of the graph-level features, in order (for reports and the baseline's columns).
pub fn global_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "log_params",
        "log_flops",
        "log_macs",
        "log_depth",
        "log_nodes",
        "log_edges",
        "log_max_channels",
        "input_h",
        "input_w",
        "input_c",
        "log_out_features",
        "log_max_activation",
        "edges_per_node",
        "max_in_degree",
        "max_out_degree",
        "frac_merge",
        "frac_branch",
        "frac_skip_edges",
        "short_over_long_path",
        "log_max_width",
        "frac_weighted",
        "frac_conv_k1",
        "frac_conv_k3",
        "frac_conv_k5plus",
        "frac_depthwise",
        "frac_strided",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("op_unknown".to_string());
    v.extend(FEATURE_KINDS.iter().map(|k| format!("op_{}", k.as_str())));
    v.extend(GLOBAL_PROXIES.iter().map(|p| format!("proxy_{p}")));
    v.extend(GLOBAL_PROXIES.iter().map(|p| format!("has_{p}")));
    v
}

#[cfg(test)]
mod tests;
