//! The proxies, one type each. Definitions: ANCHORS.md section 3.3 (the official code).

use super::codes::{add_agreements, code_bytes, distinct_columns, distinct_taps};
use super::memory::Pass;
use super::passes::{cross_entropy, first_output, sum_terms, tch_err, weights};
use super::{score_by_parts, Needs, Proxy, ProxyInput, Reads};
use crate::error::Result;
use crate::exec::{no_grad, ExecOptions, Executor, Init, Taps};
use crate::spaces::torchstat_flops;
use tch::{Kind, Tensor};

use crate::exec::TchResult;

/// The logits of the first output as `[N, classes]`.
fn logits(ex: &Executor, x: &Tensor, input: &ProxyInput) -> Result<Tensor> {
    first_output(ex.forward(&[x.shallow_clone()], Taps::default())?.outputs, input)
}

/// Sums `term(theta, dL/dtheta)` over every element of the conv/linear weights, after a backward
/// pass has filled their gradients.
fn over_weights(
    input: &ProxyInput,
    ex: &Executor,
    what: &str,
    term: impl Fn(&Tensor, &Tensor) -> TchResult<Tensor>,
) -> Result<f64> {
    let ws = weights(ex);
    let mut gs = Vec::new();
    for w in &ws {
        let g = w.grad();
        if !g.defined() {
            return Err(input.fail("a weight got no gradient".into()));
        }
        gs.push(g);
    }
    sum_terms(&ws, &gs, term).map_err(|e| tch_err(input, what, e))
}

/// `#params` in millions (NASLib's unit for NB-201).
pub struct Params;
impl Proxy for Params {
    fn name(&self) -> &'static str {
        "params"
    }
    fn needs(&self) -> Needs {
        Needs::Graph
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        Ok(input.cg.summary().params as f64 / 1e6)
    }
}

/// FLOPs in millions, counted as torchstat counts them (NASLib's `flops`, see `spaces::flops`).
pub struct Flops;
impl Proxy for Flops {
    fn name(&self) -> &'static str {
        "flops"
    }
    fn needs(&self) -> Needs {
        Needs::Graph
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        Ok(torchstat_flops(input.cg) as f64 / 1e6)
    }
}

/// SynFlow: float64, BatchNorm removed, weights made absolute, an all-ones input of batch 1,
/// R = sum(output); score = sum |theta * dR/dtheta| over conv/linear weights. Stored as log10
/// (raw values reach 1e60); a score of 0 (no path from input to output) is stored as log10 of
/// the smallest positive double, -307.65, so it ranks last. A network deep enough that R or
/// the score passes float64's range (pytorchcv's ResNet-542 for CIFAR-10: R = inf, then NaN
/// gradients; ResNet-272 reaches 1e300) has no score: an error, not a rank.
pub struct Synflow;
impl Proxy for Synflow {
    fn name(&self) -> &'static str {
        "synflow"
    }
    fn log10(&self) -> bool {
        true
    }
    fn needs(&self) -> Needs {
        Needs::Nothing
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        let opts = ExecOptions { double: true, keep_bn: false, ..Default::default() };
        let mut ex = input.executor(opts, Init::Default)?;
        ex.init(Init::Abs, input.seed)?;
        let [c, h, w] = input.input_chw()?;
        let x = Tensor::ones([1, c as i64, h as i64, w as i64], (Kind::Double, input.device));
        let fwd = ex.forward(&[x], Taps::default())?;
        let y = fwd.outputs.into_iter().next().ok_or_else(|| input.fail("no output".into()))?;
        let r = y.f_sum(Kind::Double).map_err(|e| tch_err(input, "sum", e))?;
        let total = r.f_double_value(&[]).map_err(|e| tch_err(input, "sum", e))?;
        if !total.is_finite() {
            return Err(overflow(input, "the output's sum", total));
        }
        r.f_backward().map_err(|e| tch_err(input, "backward", e))?;
        let s = over_weights(input, &ex, "score", |w, g| w.f_mul(g)?.f_abs())?;
        if !s.is_finite() {
            return Err(overflow(input, "the score", s));
        }
        Ok(s.max(f64::MIN_POSITIVE).log10())
    }
}

/// SynFlow's error where `what` left float64's range.
fn overflow(input: &ProxyInput, what: &str, v: f64) -> crate::Error {
    input.fail(format!(
        "synflow overflows float64: {what} is {v} (the absolute weights' products along the \
         network's paths pass 1e308); no score"
    ))
}

/// SNIP: sum |theta * dL/dtheta| over conv/linear weights, cross-entropy on a batch of 64.
pub struct Snip;
impl Proxy for Snip {
    fn name(&self) -> &'static str {
        "snip"
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    fn reads(&self) -> Reads {
        Reads::WEIGHT_GRADS
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        Ok(input.grad_sums()?.snip)
    }
}

/// GradNorm: sum over conv/linear layers of the Frobenius norm of dL/dW, batch 64.
pub struct GradNorm;
impl Proxy for GradNorm {
    fn name(&self) -> &'static str {
        "grad_norm"
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    fn reads(&self) -> Reads {
        Reads::WEIGHT_GRADS
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        Ok(input.grad_sums()?.grad_norm)
    }
}

/// Plain: sum of theta * dL/dtheta (no absolute value) over conv/linear weights, batch 64.
pub struct Plain;
impl Proxy for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    fn reads(&self) -> Reads {
        Reads::WEIGHT_GRADS
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        Ok(input.grad_sums()?.plain)
    }
}

/// L2 norm: sum over conv/linear layers of the Frobenius norm of the initial weights.
pub struct L2Norm;
impl Proxy for L2Norm {
    fn name(&self) -> &'static str {
        "l2_norm"
    }
    fn needs(&self) -> Needs {
        Needs::Nothing
    }
    // reads the initial weights, runs nothing
    fn pass(&self) -> Pass {
        Pass::None
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        let ex = input.default_executor()?;
        let norms = || -> TchResult<f64> {
            let mut total = 0f64;
            for w in weights(ex) {
                total += w.f_norm()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
            Ok(total)
        };
        norms().map_err(|e| tch_err(input, "score", e))
    }
}

/// Jacobian covariance: J = d(sum y)/dx per sample on a batch of 64, C = corrcoef(J),
/// score = -sum(log(v + 1e-5) + 1/(v + 1e-5)) over C's eigenvalues v.
pub struct Jacov;
impl Proxy for Jacov {
    fn name(&self) -> &'static str {
        "jacov"
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    fn reads(&self) -> Reads {
        Reads::INPUT_JACOBIAN
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        input.shared(input.loss_pass(self.reads()).jacov)
    }
}

/// Fisher (channel mode): for every conv/linear output a with gradient g, per channel
/// 0.5 * mean_n (sum_spatial a * g)^2, times the layer's fan-in (the reference broadcasts each
/// channel's value to the channel's weights, then sums them all); batch 64.
pub struct Fisher;
impl Proxy for Fisher {
    fn name(&self) -> &'static str {
        "fisher"
    }
    // @2: weighted by fan-in since 2026-12-04; values cached before are the unweighted sum
    fn key(&self) -> String {
        format!("{}@2", self.name())
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    fn reads(&self) -> Reads {
        Reads::ACT_GRADS
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        input.shared(input.loss_pass(self.reads()).fisher)
    }
}

/// GraSP: g = dL/dtheta (detached), then z = sum(g * dL/dtheta) with the graph kept, backward;
/// score = sum -theta * (Hg) over conv/linear weights; batch 64, T = 1.
pub struct Grasp;
impl Proxy for Grasp {
    fn name(&self) -> &'static str {
        "grasp"
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    // a forward, a backward kept differentiable, and the double backward
    fn cost(&self) -> usize {
        5 * 64
    }
    fn reads(&self) -> Reads {
        Reads::HESSIAN_GRAD
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        input.shared(input.loss_pass(self.reads()).grasp)
    }
}

/// NASWOT: batch 128; binary codes c of every ReLU's input; K = sum c c^T + (1-c)(1-c)^T;
/// score = log |det K|.
pub struct Nwot;
impl Proxy for Nwot {
    fn name(&self) -> &'static str {
        "nwot"
    }
    fn needs(&self) -> Needs {
        Needs::Images(128)
    }
    fn pass(&self) -> Pass {
        Pass::ForwardTaps
    }
    // one forward, no backward
    fn cost(&self) -> usize {
        128
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        let ex = input.default_executor()?;
        let (x, _) = input.batch(128, ex.kind())?;
        let fwd = no_grad(|| ex.forward(&[x], Taps { relu_in: true, ..Default::default() }))?;
        if fwd.relu_in.is_empty() {
            return Err(input.fail("nwot needs ReLU activations; the network has none".into()));
        }
        let f = |e| tch_err(input, "nwot", e);
        let n = fwd.relu_in[0].value.size()[0];
        let mut k = vec![0f64; (n * n) as usize];
        for (t, m) in distinct_taps(&fwd.relu_in) {
            let bits = t.value.f_gt(0.0).and_then(|c| code_bytes(&c)).map_err(f)?;
            // m ReLUs on one input: m times one term, exact (integers below 2^53)
            add_agreements(&mut k, &bits, n as usize, m as f64).map_err(f)?;
        }
        let k = Tensor::from_slice(&k).reshape([n, n]).to_device(input.device);
        let (_, logabs) = Tensor::f_linalg_slogdet(&k).map_err(f)?;
        logabs.f_double_value(&[]).map_err(f)
    }
}

/// SWAP: conv/linear weights N(0, 1), biases 0, BN scale 1 and shift 0; 16 samples; the
/// outputs of every ReLU with a 4-D input, concatenated per sample, `sign`ed; SWAP = the number
/// of distinct per-unit activation patterns across the samples, averaged over 32 fresh
/// initialisations. With `mu` and `sigma` set it is the regularised SWAP:
/// SWAP * exp(-(P - mu)^2 / sigma), P = #params in thousands.
pub struct Swap {
    /// Samples per batch (16 in the paper).
    pub samples: usize,
    /// Initialisations averaged (32).
    pub repeats: usize,
    /// Regularisation `(mu, sigma)`, in thousands of parameters.
    pub reg: Option<(f64, f64)>,
}

impl Default for Swap {
    fn default() -> Self {
        Swap { samples: 16, repeats: 32, reg: None }
    }
}

impl Proxy for Swap {
    fn name(&self) -> &'static str {
        if self.reg.is_some() {
            "swap_reg"
        } else {
            "swap"
        }
    }
    fn key(&self) -> String {
        match self.reg {
            Some((mu, sigma)) => format!("{}[{mu},{sigma}]", self.name()),
            None => self.name().into(),
        }
    }
    fn needs(&self) -> Needs {
        Needs::Images(self.samples)
    }
    fn pass(&self) -> Pass {
        Pass::ForwardTaps
    }
    // a forward per initialisation, no backward
    fn cost(&self) -> usize {
        self.samples * self.repeats
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        score_by_parts(self, input)
    }
    // the initialisations in four runs of consecutive ones, for lanes
    fn parts(&self) -> usize {
        self.repeats.clamp(1, 4)
    }
    /// The distinct-pattern count of each initialisation of part `part`.
    fn score_part(&self, input: &ProxyInput, part: usize) -> Result<Vec<f64>> {
        let seed = |r: usize| input.seed.wrapping_add(r as u64 * 7919);
        let (first, end) =
            (part * self.repeats / self.parts(), (part + 1) * self.repeats / self.parts());
        let mut ex = input.executor_at(ExecOptions::default(), Init::Gaussian, seed(first))?;
        let (x, _) = input.batch(self.samples, ex.kind())?;
        let f = |e| tch_err(input, "swap", e);
        let mut counts = Vec::new();
        for r in first..end {
            if r > first {
                ex.init(Init::Gaussian, seed(r))?;
            }
            let fwd = no_grad(|| {
                ex.forward(&[x.shallow_clone()], Taps { relu_out: true, ..Default::default() })
            })?;
            // units x samples sign patterns, packed into bit keys per unit
            // (ReLUs on one input repeat its columns: they add no distinct pattern)
            let mut codes = Vec::new();
            for (tout, _) in distinct_taps(&fwd.relu_out) {
                if tout.value.dim() == 4 {
                    codes.push(
                        tout.value
                            .f_gt(0.0)
                            .and_then(|t| t.f_reshape([x.size()[0], -1]))
                            .map_err(f)?,
                    );
                }
            }
            if codes.is_empty() {
                return Err(
                    input.fail("swap needs ReLUs on 4-D activations; the network has none".into())
                );
            }
            let bits = Tensor::f_cat(&codes, 1).and_then(|m| code_bytes(&m)).map_err(f)?;
            counts.push(distinct_columns(&bits, x.size()[0] as usize).map_err(f)? as f64);
        }
        Ok(counts)
    }
    fn combine(&self, input: &ProxyInput, parts: Vec<Vec<f64>>) -> Result<f64> {
        // integer counts: their float64 sum is exact in any grouping
        let swap = parts.iter().flatten().sum::<f64>() / self.repeats as f64;
        Ok(match self.reg {
            Some((mu, sigma)) => {
                let p = input.cg.summary().params as f64 / 1e3;
                swap * (-(p - mu).powi(2) / sigma).exp()
            }
            None => swap,
        })
    }
}

/// ZiCo: training mode; two batches of 64 (ZiCo's own code reads two loader batches): the loss
/// pass's batch and the next seed's, each standardised on its own; per batch the gradients of
/// every conv/linear weight; per layer S = sum over weights with sigma > 0 of mean|g| / std(g)
/// across batches; ZiCo = sum over layers of ln S (S = 0 skipped). The first batch's gradients
/// are the ones SNIP and GradNorm read, so beside them ZiCo costs one forward and backward.
/// Until 2026-12-03 its batches were the two halves of one batch of 128, standardised together
/// (other values, cached under `zico`; this definition is cached under `zico@2`).
pub struct Zico;
impl Proxy for Zico {
    fn name(&self) -> &'static str {
        "zico"
    }
    fn key(&self) -> String {
        format!("{}@2", self.name())
    }
    fn needs(&self) -> Needs {
        Needs::Images(64)
    }
    fn reads(&self) -> Reads {
        Reads::WEIGHT_GRADS
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        let first = input.weight_grads()?;
        let ex = input.default_executor()?;
        let (x, labels) = input.batch_at(64, ex.kind(), input.seed.wrapping_add(1))?;
        let f = |e| tch_err(input, "zico", e);
        let loss = cross_entropy(&logits(ex, &x, input)?, &labels, input)?;
        let second = Tensor::f_run_backward(&[&loss], &weights(ex), false, false).map_err(f)?;
        let mut score = 0f64;
        for (a, b) in first.iter().zip(&second) {
            let s = zico_layer(a, b).map_err(f)?;
            if s != 0.0 {
                score += s.ln();
            }
        }
        Ok(score)
    }
}

/// One layer's S from its weights' gradients on the two batches: the sum over weights with
/// sigma > 0 of mean|g| / sigma(g), both across the batches, in float64.
fn zico_layer(a: &Tensor, b: &Tensor) -> TchResult<f64> {
    let flat = |t: &Tensor| t.f_to_kind(Kind::Double)?.f_flatten(0, -1);
    let g = Tensor::f_stack(&[flat(a)?, flat(b)?], 0)?;
    let std = g.f_std_dim(0, false, false)?;
    let mean_abs = g.f_abs()?.f_mean_dim(0, false, Kind::Double)?;
    let mask = std.f_gt(0.0)?;
    let ratio = mean_abs.f_masked_select(&mask)?.f_div(&std.f_masked_select(&mask)?)?;
    ratio.f_sum(Kind::Double)?.f_double_value(&[])
}

/// Why epsinas has no value when its outputs under the constant `w` span `[lo, hi]`, and what
/// to do: the two constants are the search space's setting, not the network's.
fn epsinas_undefined(w: f64, lo: f64, hi: f64) -> String {
    let what = if !(lo.is_finite() && hi.is_finite()) {
        "overflow (not finite)".to_string()
    } else if lo == 0.0 && hi == 0.0 {
        "are all 0 (nothing reaches them: vanished through the depth, or cut by ReLUs)".to_string()
    } else {
        format!("are all {lo:.4e}")
    };
    format!(
        "epsinas is undefined: under the constant weight {w:e} the outputs {what}; the two \
         constants are set per search space (--epsinas-weights W1 W2; the paper's: 1e-7 1 for \
         NB-201, 1e-4 10 for NB-101)"
    )
}

/// epsinas: one batch of 256 images, labels unused; the network with every weight the
/// constant w (biases 0), for w in `weights` (NB-201: 1e-7 and 1; NB-101: 1e-4 and 10); each
/// output min-max normalised, exact zeros set to NaN; eps = nanmean|p1 - p2| / nanmean(p1, p2).
/// Bigger is better (the official evaluation correlates the raw score with accuracy).
pub struct Epsinas {
    /// The two constant weights.
    pub weights: (f64, f64),
}

impl Default for Epsinas {
    fn default() -> Self {
        Epsinas { weights: (1e-7, 1.0) }
    }
}

impl Proxy for Epsinas {
    fn name(&self) -> &'static str {
        "epsinas"
    }
    fn key(&self) -> String {
        match self.weights {
            w if w == Epsinas::default().weights => self.name().into(),
            (w1, w2) => format!("{}[{w1},{w2}]", self.name()),
        }
    }
    // bigger is better: the official evaluation (`epsinas_utils.py::compute_stats`) correlates
    // the raw score with accuracy, reversing only for metrics to minimise (perplexity, RMSE)
    fn needs(&self) -> Needs {
        Needs::Images(256)
    }
    fn pass(&self) -> Pass {
        Pass::Forward
    }
    // a forward per constant, no backward
    fn cost(&self) -> usize {
        2 * 256
    }
    fn score(&self, input: &ProxyInput) -> Result<f64> {
        score_by_parts(self, input)
    }
    // one part per constant, for lanes
    fn parts(&self) -> usize {
        2
    }
    /// The outputs under constant `part`, min-max normalised, exact zeros NaN.
    fn score_part(&self, input: &ProxyInput, part: usize) -> Result<Vec<f64>> {
        let w = if part == 0 { self.weights.0 } else { self.weights.1 };
        let ex = input.executor(ExecOptions::default(), Init::Constant(w))?;
        let (x, _) = input.batch(256, ex.kind())?;
        let f = |e| tch_err(input, "epsinas", e);
        let y = no_grad(|| logits(&ex, &x, input))?.to_kind(Kind::Double).flatten(0, -1);
        let v: Vec<f64> = Vec::<f64>::try_from(&y).map_err(f)?;
        let (lo, hi) =
            v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let span = hi - lo;
        if !(span > 0.0 && span.is_finite()) {
            return Err(input.fail(epsinas_undefined(w, lo, hi)));
        }
        Ok(v.iter()
            .map(|&x| {
                let p = if span > 0.0 { (x - lo) / span } else { f64::NAN };
                if p == 0.0 {
                    f64::NAN
                } else {
                    p
                }
            })
            .collect())
    }
    fn combine(&self, input: &ProxyInput, ps: Vec<Vec<f64>>) -> Result<f64> {
        let nanmean = |it: &mut dyn Iterator<Item = f64>| {
            let (s, n) = it.filter(|v| !v.is_nan()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            if n == 0 {
                f64::NAN
            } else {
                s / n as f64
            }
        };
        let [p1, p2] = ps.as_slice() else {
            return Err(input.fail(format!("epsinas: 2 parts expected, {} given", ps.len())));
        };
        let num = nanmean(&mut p1.iter().zip(p2).map(|(a, b)| (a - b).abs()));
        let den = nanmean(&mut p1.iter().chain(p2).copied());
        let eps = num / den;
        if !eps.is_finite() {
            return Err(input.fail(
                "epsinas is undefined: the outputs are constant under a constant initialisation"
                    .into(),
            ));
        }
        Ok(eps)
    }
}

#[cfg(test)]
mod tests {
    use super::epsinas_undefined;

    #[test]
    fn epsinas_says_which_constant_failed_and_what_to_do() {
        let m = epsinas_undefined(1e-7, 0.0, 0.0);
        assert!(m.contains("1e-7") && m.contains("are all 0"), "{m}");
        assert!(m.contains("--epsinas-weights"), "{m}");
        assert!(epsinas_undefined(1.0, f64::NEG_INFINITY, f64::INFINITY).contains("overflow"));
        assert!(epsinas_undefined(10.0, 2.5, 2.5).contains("are all 2.5000e0"));
    }
}
