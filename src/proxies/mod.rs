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

mod codes;
mod defs;
mod lanes;
pub mod memory;
mod passes;
pub mod schedule;

pub use defs::*;
pub use lanes::{score_lanes, Scores};
use passes::{GradSums, LossPass};

use crate::dataset::images::{load_batch, ImageSource};
use crate::error::{Error, Result};
use crate::exec::{ExecOptions, Executor, Init};
use crate::graph::{Cg, OpKind};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;
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

/// What a proxy reads from the loss pass the proxies of one network share (one forward and
/// backward of the default-initialised network on the same batch of 64 images): the runner
/// computes the union of what the proxies of a run read, once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// The gradients of the cross-entropy with respect to the conv/linear weights.
    pub weight_grads: bool,
    /// The gradients of the cross-entropy with respect to the conv/linear outputs.
    pub act_grads: bool,
    /// The Hessian-gradient product of the weights (a second, double backward).
    pub hessian_grad: bool,
    /// The Jacobian of the summed output with respect to the input images.
    pub input_jacobian: bool,
}

impl Reads {
    /// SNIP, GradNorm and Plain: the weight gradients.
    pub const WEIGHT_GRADS: Reads =
        Reads { weight_grads: true, act_grads: false, hessian_grad: false, input_jacobian: false };
    /// Fisher: the conv/linear output gradients.
    pub const ACT_GRADS: Reads =
        Reads { weight_grads: false, act_grads: true, hessian_grad: false, input_jacobian: false };
    /// GraSP: the Hessian-gradient product.
    pub const HESSIAN_GRAD: Reads =
        Reads { weight_grads: false, act_grads: false, hessian_grad: true, input_jacobian: false };
    /// Jacobian covariance: the input Jacobian.
    pub const INPUT_JACOBIAN: Reads =
        Reads { weight_grads: false, act_grads: false, hessian_grad: false, input_jacobian: true };

    /// Everything either reads.
    pub fn union(self, o: Reads) -> Reads {
        Reads {
            weight_grads: self.weight_grads || o.weight_grads,
            act_grads: self.act_grads || o.act_grads,
            hessian_grad: self.hessian_grad || o.hessian_grad,
            input_jacobian: self.input_jacobian || o.input_jacobian,
        }
    }

    /// Whether `self` holds everything `o` reads.
    pub fn covers(self, o: Reads) -> bool {
        self.union(o) == self
    }
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
    /// What the proxies of this run read from the shared loss pass ([`ProxyInput::planning`]).
    plan: Reads,
    /// The default-initialised network, built once for every proxy that reads it.
    default_ex: OnceCell<std::result::Result<Executor<'a>, String>>,
    /// The shared loss pass, run by the first proxy that reads it.
    loss: OnceCell<LossPass>,
}

impl<'a> ProxyInput<'a> {
    /// The input of the proxies of one network: images from `images`, every batch and
    /// initialisation drawn from `seed`, run on `device`, each proxy at its reference batch size.
    pub fn new(cg: &'a Cg, images: &'a ImageSource, seed: u64, device: Device) -> Self {
        ProxyInput {
            cg,
            images,
            seed,
            device,
            batch: None,
            plan: Reads::default(),
            default_ex: OnceCell::new(),
            loss: OnceCell::new(),
        }
    }

    /// The same, sharing the loss pass among `proxies`: the first of them to run computes what
    /// all of them read. Without it each proxy's pass computes only what that proxy reads.
    pub fn planning<'p>(self, proxies: impl IntoIterator<Item = &'p dyn Proxy>) -> Self {
        let plan = proxies.into_iter().fold(self.plan, |r, p| r.union(p.reads()));
        ProxyInput { plan, ..self }
    }

    /// The same with every data proxy's batch size set to `batch` (`None`: reference sizes).
    pub fn with_batch(self, batch: Option<usize>) -> Self {
        ProxyInput { batch, ..self }
    }

    /// The shared loss pass with at least what `want` reads: the planned pass, run on first
    /// use; a proxy outside the plan gets a pass of its own.
    pub(crate) fn loss_pass(&self, want: Reads) -> LossPass {
        let planned = self.loss.get_or_init(|| passes::loss_pass(self, self.plan.union(want)));
        if planned.reads.covers(want) {
            planned.clone()
        } else {
            passes::loss_pass(self, want)
        }
    }

    /// The gradient sums SNIP, GradNorm and Plain read.
    pub(crate) fn grad_sums(&self) -> Result<GradSums> {
        self.shared(self.loss_pass(Reads::WEIGHT_GRADS).sums)
    }

    /// The loss pass's gradients of the conv/linear weights (ZiCo's first batch).
    pub(crate) fn weight_grads(&self) -> Result<Rc<Vec<Tensor>>> {
        self.shared(self.loss_pass(Reads::WEIGHT_GRADS).grads)
    }

    /// A shared value, or its error for this network.
    pub(crate) fn shared<T>(&self, v: Option<std::result::Result<T, String>>) -> Result<T> {
        match v {
            Some(Ok(v)) => Ok(v),
            Some(Err(msg)) => Err(self.fail(msg)),
            None => Err(self.fail("the shared pass did not compute this quantity".into())),
        }
    }

    /// The network with PyTorch's default initialisation in training mode, built once and
    /// shared by the proxies that only read it or differentiate through it.
    pub(crate) fn default_executor(&self) -> Result<&Executor<'a>> {
        let ex = self.default_ex.get_or_init(|| {
            self.executor(ExecOptions::default(), Init::Default).map_err(crate::Error::into_message)
        });
        ex.as_ref().map_err(|m| self.fail(m.clone()))
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
        self.batch_at(n, kind, self.seed)
    }

    /// The same, drawn with `seed` instead of the input's (ZiCo's second batch).
    pub fn batch_at(&self, n: usize, kind: Kind, seed: u64) -> Result<(Tensor, Tensor)> {
        let n = self.batch.unwrap_or(n).max(2);
        let b = load_batch(self.images, n, self.input_chw()?, seed)?;
        let dims: Vec<i64> = b.shape.iter().map(|&d| d as i64).collect();
        let x = Tensor::from_slice(&b.data).reshape(&dims).to_kind(kind).to_device(self.device);
        let y = Tensor::from_slice(&b.labels).to_device(self.device);
        Ok((x, y))
    }

    /// An executor with the given options and initialisation, seeded.
    pub fn executor(&self, opts: ExecOptions, init: Init) -> Result<Executor<'a>> {
        self.executor_at(opts, init, self.seed)
    }

    /// The same, initialised from `seed` instead of the input's (a proxy that draws several
    /// initialisations builds its network at the first).
    pub fn executor_at(&self, opts: ExecOptions, init: Init, seed: u64) -> Result<Executor<'a>> {
        Executor::new(self.cg, ExecOptions { device: self.device, ..opts }, init, seed)
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
    /// What its value is cached under: its name, with its settings where they differ from the
    /// defaults (`epsinas[0.0001,10]`), so a cache holds the scores of every setting side by
    /// side and a run under other settings reuses what they share; and with its definition's
    /// revision where that changed after values were cached (`zico@2`), so a cache never hands
    /// back a value of the old definition.
    fn key(&self) -> String {
        self.name().to_string()
    }
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
    /// What it reads from the loss pass the proxies of one network share (nothing by default).
    fn reads(&self) -> Reads {
        Reads::default()
    }
    /// What its pass keeps of the activations, for the memory estimate ([`memory::Pass`]).
    fn pass(&self) -> memory::Pass {
        memory::Pass::default_for(self.needs(), self.reads())
    }
    /// The score of one network.
    fn score(&self, input: &ProxyInput) -> Result<f64>;
    /// Its rough cost in image passes (a forward of one image 1, with its backward 3), for
    /// running the dearest first ([`score_lanes`]). By default a forward and a backward of
    /// its batch; nothing when it reads only the graph.
    fn cost(&self) -> usize {
        match self.needs() {
            Needs::Graph => 0,
            Needs::Nothing => 3,
            Needs::Images(n) => 3 * n,
        }
    }
    /// How many independent parts its score splits into, so that lanes can run them apart
    /// (1: it does not split). [`Proxy::score`] must equal [`Proxy::combine`] of every part.
    fn parts(&self) -> usize {
        1
    }
    /// Part `i` of [`Proxy::parts`]: the numbers [`Proxy::combine`] reads.
    fn score_part(&self, input: &ProxyInput, _part: usize) -> Result<Vec<f64>> {
        Ok(vec![self.score(input)?])
    }
    /// The score from every part's numbers, in part order.
    fn combine(&self, _input: &ProxyInput, parts: Vec<Vec<f64>>) -> Result<f64> {
        Ok(parts.first().and_then(|p| p.first()).copied().unwrap_or(f64::NAN))
    }
}

/// A split proxy's score, its parts run in order on this thread (its [`Proxy::score`]).
pub(crate) fn score_by_parts(p: &dyn Proxy, input: &ProxyInput) -> Result<f64> {
    let parts = (0..p.parts()).map(|i| p.score_part(input, i)).collect::<Result<Vec<_>>>()?;
    p.combine(input, parts)
}

/// What the proxies make of the BatchNorms an eval-mode export folded into its convolutions
/// (`Cg::restore_batchnorms`, docs/proxies.md "Eval-mode exports").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FoldedBn {
    /// Put back those the exporter's names say it folded (the default).
    #[default]
    Restore,
    /// And those whose names say nothing but whose place suggests a BatchNorm.
    Guess,
    /// Score the file's graph as it is.
    Keep,
}

impl std::str::FromStr for FoldedBn {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "restore" => Ok(FoldedBn::Restore),
            "guess" => Ok(FoldedBn::Guess),
            "keep" => Ok(FoldedBn::Keep),
            _ => Err(format!("'{s}' is not one of restore, guess, keep")),
        }
    }
}

/// A file's graph as its proxies run it: the network the file holds, without what it wraps
/// around it (`Cg::keep_network_only`), its folded BatchNorms put back as `folded` says. How
/// many were put back.
pub fn scored_network(cg: &mut Cg, folded: FoldedBn) -> usize {
    cg.keep_network_only();
    match folded {
        FoldedBn::Restore => cg.restore_batchnorms(false),
        FoldedBn::Guess => cg.restore_batchnorms(true),
        FoldedBn::Keep => 0,
    }
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
pub fn score_all(proxies: &[Box<dyn Proxy>], input: ProxyInput) -> Scores {
    let refs: Vec<&dyn Proxy> = proxies.iter().map(|p| &**p).collect();
    score_lanes(&refs, input, 1)
}

/// One proxy's score of one network, keyed by its name; a failure (or a value that is not
/// finite) is kept as its message.
pub fn score_one(p: &dyn Proxy, input: &ProxyInput) -> Scores {
    finite(p, input, guarded(input, p.name(), || p.score(input)))
}

/// A proxy's work with a panic made its error, so one network's failure does not end a run:
/// tch's infallible calls unwrap libtorch's errors, an allocation refused under the run's
/// address-space cap among them (the message keeps "can't allocate memory", so the cache
/// does not keep it, [`memory::is_out_of_memory`]).
pub(crate) fn guarded<T>(
    input: &ProxyInput,
    what: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    crate::error::catch_panic(f).unwrap_or_else(|msg| Err(input.fail(format!("{what}: {msg}"))))
}

/// A proxy's result keyed by its name, a value that is not finite made an error.
pub(crate) fn finite(p: &dyn Proxy, input: &ProxyInput, r: Result<f64>) -> Scores {
    let r = r.and_then(|v| {
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

    /// The scores of one network, as `nape proxies` scores its file ([`scored_network`]).
    pub fn score(&self, cg: &Cg) -> BTreeMap<String, f64> {
        let Some(images) = &self.images else { return BTreeMap::new() };
        let mut cg = cg.clone();
        scored_network(&mut cg, FoldedBn::Restore);
        let input = ProxyInput::new(&cg, images, 0, Device::Cpu);
        score_all(&self.proxies, input)
            .into_iter()
            .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
            .collect()
    }
}
