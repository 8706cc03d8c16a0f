//! Zero-cost proxies: scores of an untrained network that correlate with its trained accuracy.
//!
//! Each proxy is one small type behind [`Proxy`], with NASLib's name, its sign convention and
//! whether its value is stored as a logarithm. The definitions follow the official code (see
//! ANCHORS.md section 3.3 and `docs/proxies.md`): which layers count (the weights of
//! convolutions and fully-connected layers), the batch sizes, initialisations and where logs
//! are taken. Static proxies (`params`, `flops`) read the CG; the others run it with the
//! executor ([`crate::exec`]) on a batch of real images drawn with the seed.
//!
//! A network with an op the executor cannot run gets a per-proxy error; the static proxies
//! still work.

mod defs;

pub use defs::*;

use crate::dataset::images::{load_batch, ImageSource};
use crate::error::{Error, Result};
use crate::exec::{ExecOptions, Executor, Init};
use crate::graph::{Cg, OpKind};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// What a proxy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Only the graph.
    Graph,
    /// The graph run on a batch of `n` images.
    Images(usize),
    /// The graph run on a constant input.
    Nothing,
}

/// Everything a proxy may use, shared by the proxies of one network.
pub struct ProxyInput<'a> {
    /// The network.
    pub cg: &'a Cg,
    /// Where image batches come from.
    pub images: &'a ImageSource,
    /// Seed for batches and initialisations.
    pub seed: u64,
    /// Where to run.
    pub device: Device,
    /// Overrides every data proxy's batch size (the reference sizes are the default).
    pub batch: Option<usize>,
    /// SNIP, GradNorm and Plain read the same gradients (same initialisation, batch and loss):
    /// the first of them to run computes all three sums, the others read them here.
    grad_sums: std::cell::OnceCell<std::result::Result<GradSums, Error>>,
}

/// The three sums over the conv/linear weights after one cross-entropy backward pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GradSums {
    pub snip: f64,
    pub grad_norm: f64,
    pub plain: f64,
}

impl<'a> ProxyInput<'a> {
    /// The input of the proxies of one network: images from `images`, every batch and
    /// initialisation drawn from `seed`, run on `device`, each proxy at its reference batch size.
    pub fn new(cg: &'a Cg, images: &'a ImageSource, seed: u64, device: Device) -> Self {
        ProxyInput { cg, images, seed, device, batch: None, grad_sums: Default::default() }
    }

    /// The same with every data proxy's batch size set to `batch` (`None`: reference sizes).
    pub fn with_batch(self, batch: Option<usize>) -> Self {
        ProxyInput { batch, ..self }
    }

    /// The gradient sums SNIP, GradNorm and Plain share, computed on first use.
    pub(crate) fn grad_sums(&self, compute: impl FnOnce() -> Result<GradSums>) -> Result<GradSums> {
        match self.grad_sums.get_or_init(compute) {
            Ok(s) => Ok(*s),
            Err(e) => Err(self.fail(match e {
                Error::Run { msg, .. } => msg.clone(),
                other => other.to_string(),
            })),
        }
    }
    /// The network's input as `[c, h, w]` (its first Input node, without the batch dimension).
    pub fn input_chw(&self) -> Result<[usize; 3]> {
        let shape = self
            .cg
            .graph
            .node_weights()
            .find(|n| n.kind == OpKind::Input)
            .map(|n| n.out_shape().to_vec())
            .unwrap_or_default();
        match shape.as_slice() {
            [_, c, h, w] => Ok([*c, *h, *w]),
            other => Err(self.fail(format!(
                "the proxies need an image input [N, C, H, W]; this network's is {other:?}"
            ))),
        }
    }

    /// A seeded batch of `n` images, as tensors (images in the executor's kind, labels int64).
    pub fn batch(&self, n: usize, kind: Kind) -> Result<(Tensor, Tensor)> {
        let n = self.batch.unwrap_or(n).max(2);
        let b = load_batch(self.images, n, self.input_chw()?, self.seed)?;
        let dims: Vec<i64> = b.shape.iter().map(|&d| d as i64).collect();
        let x = Tensor::from_slice(&b.data).reshape(&dims).to_kind(kind).to_device(self.device);
        let y = Tensor::from_slice(&b.labels).to_device(self.device);
        Ok((x, y))
    }

    /// An executor with the given options and initialisation, seeded.
    pub fn executor(&self, opts: ExecOptions, init: Init) -> Result<Executor<'_>> {
        Executor::new(self.cg, ExecOptions { device: self.device, ..opts }, init, self.seed)
    }

    /// A proxy failure for this network.
    pub fn fail(&self, msg: String) -> Error {
        Error::Run { path: self.cg.source.clone(), msg }
    }
}

/// A zero-cost proxy.
pub trait Proxy: Send + Sync {
    /// Its name (NASLib's where it exists).
    fn name(&self) -> &'static str;
    /// Whether a bigger value predicts a better network.
    fn higher_is_better(&self) -> bool {
        true
    }
    /// Whether the value is stored as log10 of the raw score (for scores spanning many orders
    /// of magnitude).
    fn log10(&self) -> bool {
        false
    }
    /// What it reads.
    fn needs(&self) -> Needs;
    /// The score of one network.
    fn score(&self, input: &ProxyInput) -> Result<f64>;
}

/// Every proxy nape computes, in NASLib's order, with default settings.
pub fn registry() -> Vec<Box<dyn Proxy>> {
    vec![
        Box::new(Params),
        Box::new(Flops),
        Box::new(Synflow),
        Box::new(Snip),
        Box::new(GradNorm),
        Box::new(Jacov),
        Box::new(Fisher),
        Box::new(Grasp),
        Box::new(Nwot),
        Box::new(Swap::default()),
        Box::new(Zico),
        Box::new(Epsinas::default()),
        Box::new(L2Norm),
        Box::new(Plain),
    ]
}

/// The proxies named in `names` (comma-separated; `all` for every one), in registry order.
pub fn select(names: &str) -> Result<Vec<Box<dyn Proxy>>> {
    let all = registry();
    if names.trim() == "all" {
        return Ok(all);
    }
    let wanted: Vec<&str> = names.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for w in &wanted {
        if !all.iter().any(|p| p.name() == *w) && !w.starts_with("swap_reg") {
            let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
            return Err(Error::Usage(format!("unknown proxy '{w}' (known: {})", known.join(", "))));
        }
    }
    Ok(all.into_iter().filter(|p| wanted.contains(&p.name())).collect())
}

/// Scores every proxy of `proxies` on one network; each proxy's failure is kept as its message.
pub fn score_all(
    proxies: &[Box<dyn Proxy>],
    input: &ProxyInput,
) -> BTreeMap<String, std::result::Result<f64, String>> {
    proxies.iter().flat_map(|p| score_one(&**p, input)).collect()
}

/// One proxy's score of one network, keyed by its name; a failure (or a value that is not
/// finite) is kept as its message.
pub fn score_one(
    p: &dyn Proxy,
    input: &ProxyInput,
) -> BTreeMap<String, std::result::Result<f64, String>> {
    let r = p.score(input).and_then(|v| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(input.fail(format!("proxy {} is not finite ({v})", p.name())))
        }
    });
    BTreeMap::from([(p.name().to_string(), r.map_err(|e| e.to_string()))])
}

/// The proxies a predictor reads as features, ready to score networks: the named proxies on
/// Fashion-MNIST batches from the data folder, seed 0, on the CPU with one libtorch thread
/// (networks are scored in parallel). A proxy that fails on a network is left out of its
/// scores (the features mark it missing).
pub struct FeatureScorer {
    proxies: Vec<Box<dyn Proxy>>,
    images: Option<ImageSource>,
}

impl std::fmt::Debug for FeatureScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.proxies.iter().map(|p| p.name()).collect();
        f.debug_struct("FeatureScorer").field("proxies", &names).finish()
    }
}

impl FeatureScorer {
    /// A scorer of `names` (none needs no data).
    pub fn new(names: &[String], data_dir: &std::path::Path) -> Result<FeatureScorer> {
        if names.is_empty() {
            return Ok(FeatureScorer { proxies: Vec::new(), images: None });
        }
        let proxies = select(&names.join(","))?;
        let images = if proxies.iter().any(|p| matches!(p.needs(), Needs::Images(_))) {
            ImageSource::fashion_mnist(data_dir)?
        } else {
            ImageSource::Gaussian { classes: 10 }
        };
        tch::set_num_threads(1);
        Ok(FeatureScorer { proxies, images: Some(images) })
    }

    /// The scores of one network.
    pub fn score(&self, cg: &Cg) -> BTreeMap<String, f64> {
        let Some(images) = &self.images else { return BTreeMap::new() };
        let input = ProxyInput::new(cg, images, 0, Device::Cpu);
        score_all(&self.proxies, &input)
            .into_iter()
            .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
            .collect()
    }
}
