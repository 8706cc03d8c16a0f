//! The pass the loss-gradient proxies share. SNIP, GradNorm, Plain, Fisher, GraSP and the
//! Jacobian covariance all read one default-initialised network in training mode on the same
//! batch of 64 images: one forward pass serves them all, one backward gives the weight
//! gradients (SNIP, GradNorm, Plain) and the activation gradients (Fisher) together, kept
//! differentiable when GraSP needs its Hessian-gradient product; the input Jacobian comes next,
//! and GraSP's pass, the last to read the graph, frees it. Each quantity is computed only when
//! a proxy of the run reads it. The weight gradients themselves are kept for ZiCo, whose first
//! batch is this pass's.

use super::{ProxyInput, Reads};
use crate::error::Result;
use crate::exec::{no_grad, tap_grads, Executor, Role, Taps};
use tch::{Kind, Reduction, Tensor};

use crate::exec::TchResult;
use std::rc::Rc;
/// A shared result: the value, or the message of the error the proxies reading it report.
type Shared<T> = std::result::Result<T, String>;

/// What one loss pass computed: each field is `None` when no proxy asked for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LossPass {
    /// What it was asked for.
    pub reads: Reads,
    /// SNIP's, GradNorm's and Plain's sums over the conv/linear weights.
    pub sums: Option<Shared<GradSums>>,
    /// The gradients of the conv/linear weights themselves, in [`weights`] order (ZiCo's first
    /// batch); set with `sums`.
    pub grads: Option<Shared<Rc<Vec<Tensor>>>>,
    /// Fisher's score.
    pub fisher: Option<Shared<f64>>,
    /// GraSP's score.
    pub grasp: Option<Shared<f64>>,
    /// The Jacobian covariance score.
    pub jacov: Option<Shared<f64>>,
}

/// The three sums over the conv/linear weights after one cross-entropy backward pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GradSums {
    pub snip: f64,
    pub grad_norm: f64,
    pub plain: f64,
}

pub(crate) fn tch_err(input: &ProxyInput, what: &str, e: tch::TchError) -> crate::Error {
    let s = e.to_string();
    input.fail(format!("{what}: {}", s.lines().next().unwrap_or("libtorch error")))
}

/// The first output of a forward pass as `[N, classes]`.
pub(crate) fn first_output(outputs: Vec<Tensor>, input: &ProxyInput) -> Result<Tensor> {
    let y =
        outputs.into_iter().next().ok_or_else(|| input.fail("the network has no output".into()))?;
    let n = y.size().first().copied().unwrap_or(1);
    y.f_reshape([n, -1]).map_err(|e| tch_err(input, "output", e))
}

/// Cross-entropy of `y` against labels (folded into the network's class count).
pub(crate) fn cross_entropy(y: &Tensor, labels: &Tensor, input: &ProxyInput) -> Result<Tensor> {
    let classes = y.size().get(1).copied().unwrap_or(1).max(1);
    let t = labels.remainder(classes);
    y.f_cross_entropy_loss(&t, None::<Tensor>, Reduction::Mean, -100, 0.0)
        .map_err(|e| tch_err(input, "loss", e))
}

/// The conv/linear weights the proxies score (`nn.Conv2d` and `nn.Linear` in the reference).
pub(crate) fn weights<'e>(ex: &'e Executor) -> Vec<&'e Tensor> {
    ex.params().iter().filter(|p| p.role == Role::Weight).map(|p| &p.tensor).collect()
}

/// The sum over every weight of `term(theta, g)`, each term summed in float64.
pub(crate) fn sum_terms(
    ws: &[&Tensor],
    gs: &[Tensor],
    term: impl Fn(&Tensor, &Tensor) -> TchResult<Tensor>,
) -> TchResult<f64> {
    let mut total = 0f64;
    for (w, g) in ws.iter().zip(gs) {
        total += term(w, g)?.f_sum(Kind::Double)?.f_double_value(&[])?;
    }
    Ok(total)
}

/// Runs the shared pass for `reads`. An error of the forward pass or of the loss is every
/// asked quantity's error; a quantity's own failure is its alone.
pub(crate) fn loss_pass(input: &ProxyInput, reads: Reads) -> LossPass {
    let fail = |msg: String| LossPass {
        reads,
        sums: reads.weight_grads.then(|| Err(msg.clone())),
        grads: reads.weight_grads.then(|| Err(msg.clone())),
        fisher: reads.act_grads.then(|| Err(msg.clone())),
        grasp: reads.hessian_grad.then(|| Err(msg.clone())),
        jacov: reads.input_jacobian.then(|| Err(msg.clone())),
    };
    match run(input, reads) {
        Ok(p) => p,
        Err(e) => fail(e.into_message()),
    }
}

fn run(input: &ProxyInput, reads: Reads) -> Result<LossPass> {
    let ex = input.default_executor()?;
    let (x, labels) = input.batch(64, ex.kind())?;
    let x = if reads.input_jacobian { x.set_requires_grad(true) } else { x };
    let taps = Taps { weighted_out: reads.act_grads, ..Default::default() };
    let fwd = ex.forward(&[x.shallow_clone()], taps)?;
    let fan_ins: Vec<usize> = fwd.weighted_out.iter().map(|t| t.fan_in.unwrap_or(1)).collect();
    let taps = fwd.weighted_out;
    let acts: Vec<&Tensor> = taps.iter().map(|t| &t.value).collect();
    let y = first_output(fwd.outputs, input)?;
    let loss = cross_entropy(&y, &labels, input)?;
    let ws = weights(ex);
    let grads = reads.weight_grads || reads.act_grads || reads.hessian_grad;
    let (gw, ga) = if grads {
        // one backward for the weights and the activations; differentiable for GraSP's second
        // backward; the graph kept for the Jacobian's
        let keep = reads.hessian_grad || reads.input_jacobian;
        let wrt: Vec<&Tensor> =
            ws.iter().copied().chain(taps.iter().flat_map(|t| t.differentiated())).collect();
        let mut g = if wrt.is_empty() {
            Vec::new()
        } else {
            Tensor::f_run_backward(&[&loss], &wrt, keep, reads.hessian_grad)
                .map_err(|e| tch_err(input, "backward", e))?
        };
        let ga = g.split_off(ws.len());
        (g, tap_grads(&taps, ga).map_err(|e| input.fail(format!("fisher: {e}")))?)
    } else {
        (Vec::new(), Vec::new())
    };
    let mut pass = LossPass { reads, ..Default::default() };
    if reads.weight_grads {
        pass.sums = Some(
            no_grad(|| grad_sums(&ws, &gw)).map_err(|e| tch_err(input, "snip", e).into_message()),
        );
    }
    if reads.act_grads {
        pass.fisher = Some(if acts.is_empty() {
            Err("no conv or linear layer to score".into())
        } else {
            fisher(&acts, &ga, &fan_ins).map_err(|e| tch_err(input, "fisher", e).into_message())
        });
    }
    // the Jacobian first, keeping the graph when GraSP still needs it: GraSP's Hessian pass,
    // the last to read the graph, then frees it as it goes instead of holding it to its end
    // (GraSP and jacov on two NB-101 cells peaked 5-6% lower, the same values)
    if reads.input_jacobian {
        pass.jacov =
            Some(jacov(input, &x, &y, reads.hessian_grad).map_err(crate::Error::into_message));
    }
    if reads.hessian_grad {
        pass.grasp = Some(grasp(input, &ws, &gw).map_err(crate::Error::into_message));
    }
    if reads.weight_grads {
        pass.grads = Some(Ok(Rc::new(gw.iter().map(Tensor::detach).collect())));
    }
    Ok(pass)
}

fn grad_sums(ws: &[&Tensor], gw: &[Tensor]) -> TchResult<GradSums> {
    Ok(GradSums {
        snip: sum_terms(ws, gw, |w, g| w.f_mul(g)?.f_abs())?,
        grad_norm: sum_terms(ws, gw, |_, g| g.f_norm())?,
        plain: sum_terms(ws, gw, |w, g| w.f_mul(g))?,
    })
}

/// Fisher (channel mode): per conv/linear output a with gradient g, per channel
/// 0.5 * mean_n (sum_spatial a * g)^2; each channel's value counted once per weight of that
/// channel (its layer's fan-in), as the reference broadcasts it to the weights before summing.
fn fisher(acts: &[&Tensor], grads: &[Tensor], fan_ins: &[usize]) -> TchResult<f64> {
    let mut total = 0f64;
    for ((a, g), &fan_in) in acts.iter().zip(grads).zip(fan_ins) {
        let ag = a.f_mul(g)?;
        let per = if ag.dim() > 2 {
            let dims: Vec<i64> = (2..ag.dim() as i64).collect();
            ag.f_sum_dim_intlist(dims.as_slice(), false, Kind::Double)?
        } else {
            ag.to_kind(Kind::Double)
        };
        let t =
            per.f_pow_tensor_scalar(2)?.f_mean_dim(0, false, Kind::Double)?.f_mul_scalar(0.5)?;
        total += fan_in as f64 * t.f_sum(Kind::Double)?.f_double_value(&[])?;
    }
    Ok(total)
}

/// GraSP: with gf = dL/dtheta kept differentiable and g its detached value,
/// z = sum(g * gf); score = sum -theta * dz/dtheta (= -theta * Hg) over conv/linear weights.
/// The last pass to read the graph: it frees it.
fn grasp(input: &ProxyInput, ws: &[&Tensor], gf: &[Tensor]) -> Result<f64> {
    if ws.is_empty() {
        return Err(input.fail("no conv or linear layer to score".into()));
    }
    let f = |e| tch_err(input, "grasp", e);
    let mut z = Tensor::zeros([], (gf[0].kind(), input.device));
    for g in gf {
        z = z.f_add(&g.detach().f_mul(g).and_then(|t| t.f_sum(g.kind())).map_err(f)?).map_err(f)?;
    }
    let hg = Tensor::f_run_backward(&[&z], ws, false, false).map_err(f)?;
    no_grad(|| sum_terms(ws, &hg, |w, h| w.f_mul(h)?.f_neg())).map_err(f)
}

/// Jacobian covariance: J = d(sum y)/dx per sample, C = corrcoef(J),
/// score = -sum(log(v + 1e-5) + 1/(v + 1e-5)) over C's eigenvalues v. `keep` keeps the graph
/// for GraSP's pass after it.
fn jacov(input: &ProxyInput, x: &Tensor, y: &Tensor, keep: bool) -> Result<f64> {
    let f = |e| tch_err(input, "jacobian", e);
    let j = Tensor::f_run_backward(&[y.f_sum(Kind::Float).map_err(f)?], &[x], keep, false)
        .map_err(f)?;
    let j = j[0].f_reshape([x.size()[0], -1]).map_err(f)?.to_kind(Kind::Double);
    let c = j.f_corrcoef().map_err(f)?;
    let undefined = || {
        input.fail("jacov is undefined: a sample's input gradient is constant (NASLib: NaN)".into())
    };
    if c.f_isnan().and_then(|t| t.f_any()).and_then(|t| t.f_int64_value(&[])).map_err(f)? != 0 {
        return Err(undefined());
    }
    let v = c.f_linalg_eigvalsh("L").map_err(f)?;
    let k = 1e-5;
    let s = v
        .f_add_scalar(k)
        .and_then(|vk| vk.f_log()?.f_add(&vk.f_reciprocal()?))
        .and_then(|t| t.f_sum(Kind::Double))
        .and_then(|t| t.f_double_value(&[]))
        .map_err(f)?;
    if s.is_nan() {
        return Err(undefined());
    }
    Ok(-s)
}
