//! The graph neural network: an op embedding concatenated with the numeric node features,
//! projected to `hidden`, then `layers` message-passing layers with a residual connection and
//! layer norm, then a mean readout per graph. Two layer kinds:
//! - GraphConv (k-GNN, Morris et al., GENNAPE's choice): `h' = W0 h + W1 sum_{j->i} h_j +
//!   W2 sum_{i->j} h_j`: messages flow along and against the data flow with separate weights,
//!   since a network's DAG carries direction;
//! - GIN: `h' = MLP(h + sum_{j->i} h_j + sum_{i->j} h_j)`.
//!
//! The readout is concatenated with an MLP of the graph-level features and, optionally, a
//! learned token encoder (embedding, 1-D convolution of width 3, masked mean), and projected to
//! the embedding. Two small heads serve pretraining: a projection for NT-Xent and a regression
//! of free statistics (log params, log FLOPs) from the GNN readout alone, so the message passing
//! itself learns what the graph-level features would otherwise give away.

use super::batch::Batch;
pub use super::config::{EncoderConfig, FeatureDims, GnnKind};
use crate::features::{histogram_column, pool_class};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

#[derive(Debug)]
enum Layer {
    GraphConv { w_self: nn::Linear, w_in: nn::Linear, w_out: nn::Linear },
    Gin { l1: nn::Linear, l2: nn::Linear },
}

/// The encoder's weights (they live in the caller's `VarStore`).
#[derive(Debug)]
pub struct GraphEncoder {
    cfg: EncoderConfig,
    op_emb: nn::Embedding,
    inp: nn::Linear,
    layers: Vec<(Layer, nn::LayerNorm)>,
    glob1: Option<(nn::Linear, nn::Linear)>,
    tok: Option<(nn::Embedding, nn::Conv1D)>,
    out: nn::Linear,
    proj1: nn::Linear,
    proj2: nn::Linear,
    aux: nn::Linear,
    /// With `pools_as_one`: each op index's class `[op_vocab]`, and the 0/1 matrix that moves
    /// each op's histogram share to its class's column `[global_dim, global_dim]`.
    classes: Option<(Tensor, Tensor)>,
}

/// The op classes and the histogram mixing of `pools_as_one` (see [`GraphEncoder`]'s field).
fn pool_classes(dims: &FeatureDims, device: tch::Device) -> (Tensor, Tensor) {
    let (v, g) = (dims.op_vocab, dims.global_dim);
    let map: Vec<i64> = (0..v as i64).map(pool_class).collect();
    // the identity, but for the rows of ops read as another: their share goes to its column
    let mut mix = vec![0f32; g * g];
    (0..g).for_each(|c| mix[c * g + c] = 1.0);
    for o in (0..v as i64).filter(|&o| pool_class(o) != o) {
        let (from, to) = (histogram_column(o), histogram_column(pool_class(o)));
        mix[from * g + from] = 0.0;
        mix[from * g + to] = 1.0;
    }
    let mix = Tensor::from_slice(&mix).view([g as i64, g as i64]);
    (Tensor::from_slice(&map).to_device(device), mix.to_device(device))
}

/// Number of free statistics the auxiliary head regresses (log params, log FLOPs).
pub const AUX_DIM: i64 = 2;

impl GraphEncoder {
    /// Creates the weights under `p`.
    pub fn new(p: &nn::Path, cfg: &EncoderConfig, dims: &FeatureDims) -> GraphEncoder {
        let h = cfg.hidden;
        let lin = |name: &str, i: i64, o: i64| nn::linear(p / name, i, o, Default::default());
        let op_emb =
            nn::embedding(p / "op_emb", dims.op_vocab as i64, cfg.op_dim, Default::default());
        let inp = lin("inp", cfg.op_dim + dims.node_dim as i64, h);
        let layers = (0..cfg.layers)
            .map(|l| {
                let q = p / format!("layer{l}");
                let ql = |name: &str| nn::linear(&q / name, h, h, Default::default());
                let layer = match cfg.kind {
                    GnnKind::GraphConv => {
                        Layer::GraphConv { w_self: ql("self"), w_in: ql("in"), w_out: ql("out") }
                    }
                    GnnKind::Gin => Layer::Gin { l1: ql("l1"), l2: ql("l2") },
                };
                (layer, nn::layer_norm(&q / "norm", vec![h], Default::default()))
            })
            .collect();
        let mut width = h;
        let glob1 = cfg.use_global.then(|| {
            width += cfg.global_hidden;
            (
                lin("glob1", dims.global_dim as i64, cfg.global_hidden),
                lin("glob2", cfg.global_hidden, cfg.global_hidden),
            )
        });
        let tok = cfg.use_text.then(|| {
            width += cfg.token_dim;
            let conv = nn::ConvConfig { padding: 1, ..Default::default() };
            (
                nn::embedding(
                    p / "tok_emb",
                    dims.token_vocab as i64 + 1,
                    cfg.token_dim,
                    Default::default(),
                ),
                nn::conv1d(p / "tok_conv", cfg.token_dim, cfg.token_dim, 3, conv),
            )
        });
        let out = lin("out", width, cfg.emb_dim);
        let proj1 = lin("proj1", cfg.emb_dim, cfg.emb_dim);
        let proj2 = lin("proj2", cfg.emb_dim, 32);
        let aux = lin("aux", h, AUX_DIM);
        let classes = cfg.pools_as_one.then(|| pool_classes(dims, p.device()));
        GraphEncoder {
            cfg: cfg.clone(),
            op_emb,
            inp,
            layers,
            glob1,
            tok,
            out,
            proj1,
            proj2,
            aux,
            classes,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Node states after message passing, averaged per graph: `[B, hidden]`.
    pub fn readout(&self, b: &Batch) -> Tensor {
        let e = match &self.classes {
            Some((map, _)) => self.op_emb.forward(&map.index_select(0, &b.op)),
            None => self.op_emb.forward(&b.op),
        };
        let mut h = self.inp.forward(&Tensor::cat(&[&e, &b.x], 1)).relu();
        for (layer, norm) in &self.layers {
            let agg_in = h.zeros_like().index_add(0, &b.dst, &h.index_select(0, &b.src));
            let agg_out = h.zeros_like().index_add(0, &b.src, &h.index_select(0, &b.dst));
            let m = match layer {
                Layer::GraphConv { w_self, w_in, w_out } => {
                    w_self.forward(&h) + w_in.forward(&agg_in) + w_out.forward(&agg_out)
                }
                Layer::Gin { l1, l2 } => l2.forward(&l1.forward(&(&h + agg_in + agg_out)).relu()),
            };
            h = norm.forward(&(h + m.relu()));
        }
        b.mean_readout(&h)
    }

    /// Graph embeddings `[B, emb_dim]` and the GNN readout `[B, hidden]`.
    pub fn forward(&self, b: &Batch) -> (Tensor, Tensor) {
        let r = self.readout(b);
        let mut parts = vec![r.shallow_clone()];
        if let Some((g1, g2)) = &self.glob1 {
            let global = match &self.classes {
                Some((_, mix)) => b.global.matmul(mix),
                None => b.global.shallow_clone(),
            };
            parts.push(g2.forward(&g1.forward(&global).relu()).relu());
        }
        if let Some((emb, conv)) = &self.tok {
            let t = emb.forward(&b.tokens).transpose(1, 2); // [B, D, L]
            let t = conv.forward(&t).relu();
            let mask = b.token_mask.unsqueeze(1); // [B, 1, L]
            let denom =
                b.token_mask.sum_dim_intlist([1i64].as_slice(), true, Kind::Float).clamp_min(1.0);
            parts.push((t * mask).sum_dim_intlist([2i64].as_slice(), false, Kind::Float) / denom);
        }
        (self.out.forward(&Tensor::cat(&parts, 1)), r)
    }

    /// The contrastive projection of embeddings, `[B, 32]`.
    pub fn project(&self, z: &Tensor) -> Tensor {
        self.proj2.forward(&self.proj1.forward(z).relu())
    }

    /// The auxiliary regression of free statistics from the readout, `[B, AUX_DIM]`.
    pub fn aux(&self, readout: &Tensor) -> Tensor {
        self.aux.forward(readout)
    }
}

/// NT-Xent (normalised temperature-scaled cross entropy, SimCLR) between two views `[B, D]`:
/// each row's positive is the same row of the other view; the other `2B - 2` rows are negatives.
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Tensor {
    let b = z1.size()[0];
    let z = Tensor::cat(&[z1, z2], 0);
    let z = &z / z.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-8);
    let sim = z.matmul(&z.transpose(0, 1)) / temperature;
    let eye = Tensor::eye(2 * b, (Kind::Bool, z.device()));
    let sim = sim.masked_fill(&eye, -1e9);
    let idx = Tensor::arange(b, (Kind::Int64, z.device()));
    let labels = Tensor::cat(&[&idx + b, idx], 0);
    sim.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{GraphFeatures, GLOBAL_DIM, NODE_DIM, TOKEN_VOCAB};
    use tch::Device;

    fn g(n: usize, seed: u32) -> GraphFeatures {
        GraphFeatures {
            n_nodes: n,
            op: (0..n).map(|i| ((i as u32 + seed) % 5) as i64 + 1).collect(),
            node: (0..n * NODE_DIM).map(|i| ((i as u32 * 7 + seed) % 11) as f32 / 11.0).collect(),
            edges: (1..n).map(|i| ((i - 1) as u32, i as u32)).collect(),
            global: vec![0.25; GLOBAL_DIM],
            tokens: (0..n as u32).map(|t| t % TOKEN_VOCAB as u32).collect(),
        }
    }

    #[test]
    fn shapes_for_both_kinds_and_text() {
        for kind in [GnnKind::GraphConv, GnnKind::Gin] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = EncoderConfig { kind, use_text: true, layers: 2, ..Default::default() };
            let enc = GraphEncoder::new(&vs.root(), &cfg, &FeatureDims::current());
            let (a, b, c) = (g(5, 1), g(9, 2), g(1, 3));
            let batch = Batch::new(&[&a, &b, &c], &FeatureDims::current(), Device::Cpu).unwrap();
            let (z, r) = enc.forward(&batch);
            assert_eq!(z.size(), vec![3, cfg.emb_dim]);
            assert_eq!(r.size(), vec![3, cfg.hidden]);
            assert_eq!(enc.project(&z).size(), vec![3, 32]);
            assert_eq!(enc.aux(&r).size(), vec![3, AUX_DIM]);
            assert!(z.isfinite().all().int64_value(&[]) == 1);
        }
    }

    #[test]
    fn a_graph_embeds_the_same_alone_or_in_a_batch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = GraphEncoder::new(&vs.root(), &EncoderConfig::default(), &FeatureDims::current());
        let (a, b) = (g(6, 1), g(4, 7));
        let dims = FeatureDims::current();
        let alone = enc.forward(&Batch::new(&[&b], &dims, Device::Cpu).unwrap()).0;
        let both = enc.forward(&Batch::new(&[&a, &b], &dims, Device::Cpu).unwrap()).0;
        let diff = (alone.get(0) - both.get(1)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "batching changed an embedding by {diff}");
    }

    #[test]
    fn with_pools_as_one_an_average_pool_embeds_as_a_max_pool() {
        use crate::features::op_index;
        use crate::graph::OpKind;
        // one graph with a max pool, its twin with an average pool (op and histogram share)
        let (max, avg) = (op_index(&OpKind::MaxPool), op_index(&OpKind::AvgPool));
        let mut a = g(6, 1);
        a.op[2] = max;
        a.global[histogram_column(max)] = 1.0 / 6.0;
        a.global[histogram_column(avg)] = 0.0;
        let mut b = a.clone();
        b.op[2] = avg;
        b.global.swap(histogram_column(max), histogram_column(avg));
        let dims = FeatureDims::current();
        for as_one in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = EncoderConfig { pools_as_one: as_one, ..Default::default() };
            let enc = GraphEncoder::new(&vs.root(), &cfg, &dims);
            // each twin in a batch of its own: in one batch of two, their rows are summed in
            // another order and differed by 9e-8 once under load
            let embed = |x: &GraphFeatures| {
                enc.forward(&Batch::new(&[x], &dims, Device::Cpu).unwrap()).0.get(0)
            };
            let diff = (embed(&a) - embed(&b)).abs().max().double_value(&[]);
            assert_eq!(diff == 0.0, as_one, "pools_as_one {as_one}: the twins differ by {diff}");
        }
    }

    #[test]
    fn nt_xent_prefers_matching_views() {
        let z = Tensor::from_slice(&[1f32, 0., 0., 1., -1., 0.]).view([3, 2]);
        let good = nt_xent(&z, &z, 0.5).double_value(&[]);
        let bad = nt_xent(&z, &z.flip([0i64].as_slice()), 0.5).double_value(&[]);
        assert!(good < bad, "matching views {good} vs mismatched {bad}");
    }
}
