//! Training-mode BatchNorm outside autograd, bit for bit libtorch's, faster.
//!
//! libtorch's CPU BatchNorm (`batch_norm_cpu_collect_stats_contiguous_impl`) sums each channel
//! of a contiguous float32 input in float64, one element after another: a chain of dependent
//! additions, about four cycles an element, which `perf` put at 19% of swap's, nwot's and
//! epsinas' forward passes on an NB-201 cell. Here eight channels are summed side by side,
//! each in exactly libtorch's order and arithmetic, so the chains overlap and every value is
//! the same bits. The normalisation that follows is libtorch's too (`alpha = invstd * weight`,
//! `beta = bias - mean * alpha`, `y = x * alpha + beta` in float32, the last two each one
//! fused multiply-add, as the compiler wrote libtorch's kernel).
//!
//! Whether that holds is checked, not assumed: the first call of a process compares this
//! kernel with libtorch's on a few shapes, and if any bit differs (another libtorch, a kernel
//! that fuses a multiply-add) every call goes to libtorch. It is used only where autograd
//! records nothing, on contiguous float32 CPU tensors: the forwards of swap, nwot and epsinas.

use crate::dataset::SplitMix64;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// Channels summed side by side.
const LANES: usize = 8;

/// Per channel, libtorch's mean (float32) and sum of squared deviations (float64, stored as
/// float32), of `x` laid out `[n][c][hw]`.
fn stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut mean, mut var_sum) = (vec![0f32; c], vec![0f32; c]);
    let mut first = 0;
    while first < c {
        let (m, v) = (&mut mean[first..], &mut var_sum[first..]);
        first += if c - first >= LANES {
            block::<LANES>(x, (n, c, hw), first, m, v)
        } else {
            block::<1>(x, (n, c, hw), first, m, v)
        };
    }
    (mean, var_sum)
}

/// The statistics of channels `first..first + L`, into the first `L` of `mean` and `var_sum`;
/// returns `L`. Each channel's sums run over samples, then positions, as libtorch's do.
// one index walks the L rows in lockstep: L independent chains of additions
#[allow(clippy::needless_range_loop)]
fn block<const L: usize>(
    x: &[f32],
    (n, c, hw): (usize, usize, usize),
    first: usize,
    mean: &mut [f32],
    var_sum: &mut [f32],
) -> usize {
    let rows =
        |s: usize| -> [&[f32]; L] { std::array::from_fn(|k| &x[(s * c + first + k) * hw..][..hw]) };
    let mut acc = [0f64; L];
    for s in 0..n {
        let r = rows(s);
        for i in 0..hw {
            for k in 0..L {
                acc[k] += r[k][i] as f64;
            }
        }
    }
    let m: [f32; L] = std::array::from_fn(|k| (acc[k] / (n * hw) as f64) as f32);
    let mut acc = [0f64; L];
    for s in 0..n {
        let r = rows(s);
        for i in 0..hw {
            for k in 0..L {
                let d = r[k][i] - m[k];
                acc[k] += (d * d) as f64;
            }
        }
    }
    mean[..L].copy_from_slice(&m);
    for k in 0..L {
        var_sum[k] = acc[k] as f32;
    }
    L
}

/// libtorch's inverse standard deviation from a float32 sum of squares over `count` elements.
fn invstd(var_sum: f32, count: usize, eps: f64) -> f32 {
    let var = var_sum / count as f32;
    if var == 0.0 && eps == 0.0 {
        return 0.0;
    }
    (1.0 / (var as f64 + eps).sqrt()) as f32
}

/// `x` normalised with its batch statistics, scaled and shifted, into `out`.
fn normalise(
    x: &[f32],
    out: &mut [f32],
    (n, c, hw): (usize, usize, usize),
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
) {
    let (mean, var_sum) = stats(x, n, c, hw);
    let terms: Vec<(f32, f32)> = (0..c)
        .map(|ch| {
            let alpha = invstd(var_sum[ch], n * hw, eps) * weight.map_or(1.0, |w| w[ch]);
            (alpha, (-mean[ch]).mul_add(alpha, bias.map_or(0.0, |b| b[ch])))
        })
        .collect();
    for (row, (xs, ys)) in x.chunks_exact(hw).zip(out.chunks_exact_mut(hw)).enumerate() {
        let (alpha, beta) = terms[row % c];
        affine(xs, ys, alpha, beta);
    }
}

/// `ys = xs * alpha + beta`, each rounded once (a fused multiply-add, as libtorch's compiled
/// kernel computes it), with the processor's FMA instructions where it has them.
fn affine(xs: &[f32], ys: &mut [f32], alpha: f32, beta: f32) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the processor has the features the function is compiled for.
        return unsafe { affine_fma(xs, ys, alpha, beta) };
    }
    // correctly rounded too (libm's fmaf), only slower
    for (y, &v) in ys.iter_mut().zip(xs) {
        *y = v.mul_add(alpha, beta);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn affine_fma(xs: &[f32], ys: &mut [f32], alpha: f32, beta: f32) {
    for (y, &v) in ys.iter_mut().zip(xs) {
        *y = v.mul_add(alpha, beta);
    }
}

/// A float32 CPU tensor's values, when it is contiguous.
fn values(t: &Tensor) -> Option<&[f32]> {
    if t.kind() != Kind::Float || t.device() != Device::Cpu || !t.is_contiguous() {
        return None;
    }
    let len = t.numel();
    // SAFETY: a contiguous float32 CPU tensor holds `numel` floats at `data_ptr`, which live
    // as long as the tensor borrowed here.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, len) })
}

/// Whether autograd records the ops run now: tch can set the grad mode but not read it. A
/// probe that cannot be allocated answers yes (libtorch's own BatchNorm then runs).
pub(super) fn grad_mode() -> bool {
    let probe = Tensor::f_zeros([], (Kind::Float, Device::Cpu));
    probe
        .and_then(|p| p.f_set_requires_grad(true)?.f_mul_scalar(1.0))
        .map_or(true, |t| t.requires_grad())
}

/// Training-mode BatchNorm of `x` (`[N, C, ...]`) by this module's kernel, or `None` where it
/// does not apply: autograd would record it (a tensor that requires grad, and `recording()`,
/// asked only then), not contiguous float32 on the CPU, or the kernel disagrees with libtorch
/// on this machine.
pub(super) fn train_forward(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    recording: impl FnOnce() -> bool,
) -> Option<Tensor> {
    let graded = |t: Option<&Tensor>| t.is_some_and(Tensor::requires_grad);
    let tracked = (x.requires_grad() || graded(weight) || graded(bias)) && recording();
    if tracked || x.dim() < 2 || !agrees() {
        return None;
    }
    run(x, weight, bias, eps)
}

fn run(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Option<Tensor> {
    let size = x.size();
    let (n, c) = (size[0] as usize, size[1] as usize);
    let hw = size[2..].iter().product::<i64>() as usize;
    // one value per channel and sample is libtorch's channels-last case, summed otherwise
    if n * hw == 0 || c == 0 || hw == 1 {
        return None;
    }
    let xs = values(x)?;
    let (w, b) = (param(weight, c)?, param(bias, c)?);
    // fallible: tch's infallible calls panic when an allocation fails (a run's address space
    // is capped); libtorch's own BatchNorm then says so as an error
    let out = Tensor::f_empty(size.as_slice(), (Kind::Float, Device::Cpu)).ok()?;
    // SAFETY: `out` was just made contiguous float32 on the CPU with as many elements as `x`,
    // and nothing else refers to it yet.
    let ys = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, xs.len()) };
    normalise(xs, ys, (n, c, hw), w, b, eps);
    Some(out)
}

/// A per-channel parameter's values: `Some(None)` when absent, `None` when not usable.
fn param(p: Option<&Tensor>, c: usize) -> Option<Option<&[f32]>> {
    match p {
        None => Some(None),
        Some(t) => values(t).filter(|v| v.len() == c).map(Some),
    }
}

/// Whether this kernel gives libtorch's bits on this machine (checked once per process), and
/// so runs the training-mode BatchNorms outside autograd.
pub fn agrees() -> bool {
    static AGREES: OnceLock<bool> = OnceLock::new();
    *AGREES.get_or_init(|| super::no_grad(check))
}

/// Compares the kernel with libtorch's training-mode BatchNorm on a few shapes: odd channel
/// counts and spatial sizes (the vector loops' tails), values of several scales. Its values
/// come from nape's own generator: libtorch's global one would move every later draw of the
/// process.
fn check() -> bool {
    let shapes: [&[i64]; 3] = [&[3, 13, 7, 5], &[4, 16, 8, 8], &[2, 9, 33]];
    let mut rng = SplitMix64(0x9E37_79B9_7F4A_7C15);
    shapes.iter().all(|&shape| {
        let c = shape[1];
        let x = uniform(&mut rng, shape, 6.0, 0.7);
        let (w, b) = (uniform(&mut rng, &[c], 2.0, 0.0), uniform(&mut rng, &[c], 2.0, 0.0));
        let theirs = x.batch_norm(
            Some(&w),
            Some(&b),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.1,
            1e-5,
            false,
        );
        match run(&x, Some(&w), Some(&b), 1e-5) {
            Some(ours) => ours.equal(&theirs),
            None => false,
        }
    })
}

/// A tensor of `shape`, uniform on `shift +- scale / 2`, from `rng`.
fn uniform(rng: &mut SplitMix64, shape: &[i64], scale: f32, shift: f32) -> Tensor {
    let len: i64 = shape.iter().product();
    let v: Vec<f32> = (0..len)
        .map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale + shift)
        .collect();
    Tensor::from_slice(&v).reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libtorch(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Tensor {
        x.batch_norm(w, b, None::<&Tensor>, None::<&Tensor>, true, 0.1, eps, false)
    }

    #[test]
    fn the_kernel_gives_libtorchs_bits() {
        assert!(check(), "the kernel disagrees with libtorch on its own check");
        let mut rng = SplitMix64(7);
        for (shape, eps) in [
            (vec![64i64, 16, 32, 32], 1e-5),
            (vec![7, 17, 3, 3], 1e-3),
            (vec![1, 8, 2, 1], 1e-5),
            (vec![16, 64, 8, 8], 1e-5),
            (vec![2, 3, 4], 0.0),
            (vec![4, 1, 5, 5], 1e-5),
            (vec![3, 5, 2, 3, 4], 1e-5),
        ] {
            let c = shape[1];
            // a mean far from zero against the spread: the deviations' rounding matters
            let x = uniform(&mut rng, &shape, 0.02, -5.0);
            let (w, b) = (uniform(&mut rng, &[c], 1.0, 0.5), uniform(&mut rng, &[c], 2.0, 0.0));
            for (wo, bo) in [(Some(&w), Some(&b)), (None, None)] {
                let ours = run(&x, wo, bo, eps).expect("applies");
                assert!(ours.equal(&libtorch(&x, wo, bo, eps)), "{shape:?} eps {eps}");
            }
        }
    }

    /// conv, BatchNorm, ReLU, conv, BatchNorm, ReLU, flatten, linear; batch statistics.
    #[test]
    fn a_network_runs_the_same_bits_with_and_without_autograd() {
        use crate::exec::{ExecOptions, Executor, Init, Taps};
        use crate::onnx::write::{ModelBuilder, Weights};
        use crate::onnx::{from_proto, ImportOptions};
        let mut m = ModelBuilder::new("cnn", "x", &[8, 3, 10, 10], Weights::Inputs);
        let mut c = "x".to_string();
        for i in 0..2 {
            c = m.conv(&format!("c{i}"), &c, 12, 3, 1, 1, 1, false);
            c = m.batch_norm(&format!("bn{i}"), &c, 1e-5, 0.1);
            c = m.relu(&format!("r{i}"), &c);
        }
        let f = m.flatten("flat", &c);
        let y = m.linear("fc", &f, 5);
        let cg = from_proto(&m.finish(&y).model, "cnn", &ImportOptions::default()).expect("cg");
        let ex = Executor::new(&cg, ExecOptions::default(), Init::Default, 11).expect("executor");
        let x = uniform(&mut SplitMix64(3), &[8, 3, 10, 10], 4.0, 0.0);
        let taps = Taps { relu_in: true, ..Default::default() };
        assert!(grad_mode() && !crate::exec::no_grad(grad_mode));
        let tracked = ex.forward(&[x.shallow_clone()], taps).expect("libtorch's BatchNorm");
        let kernel = crate::exec::no_grad(|| ex.forward(&[x], taps)).expect("this kernel");
        assert!(tracked.outputs[0].requires_grad() && !kernel.outputs[0].requires_grad());
        assert!(kernel.outputs[0].equal(&tracked.outputs[0]));
        assert_eq!(kernel.relu_in.len(), 2);
        for (a, b) in kernel.relu_in.iter().zip(&tracked.relu_in) {
            assert!(a.value.equal(&b.value), "{}", a.node);
        }
    }

    #[test]
    fn it_declines_what_it_does_not_cover() {
        let x = Tensor::randn([4, 3, 5, 5], (Kind::Float, Device::Cpu));
        assert!(run(&x.transpose(2, 3), None, None, 1e-5).is_none(), "not contiguous");
        assert!(run(&x.to_kind(Kind::Double), None, None, 1e-5).is_none(), "float64");
        let w = Tensor::ones([4], (Kind::Float, Device::Cpu));
        assert!(run(&x, Some(&w), None, 1e-5).is_none(), "weights of another width");
        let flat = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        assert!(run(&flat, None, None, 1e-5).is_none(), "one value per channel (channels last)");
        assert!(run(&flat.view([4, 3, 1, 1]), None, None, 1e-5).is_none(), "1x1 likewise");
        // autograd: declined only where it would record the op
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        assert!(train_forward(&x, Some(&w), None, 1e-5, || true).is_none(), "recorded");
        assert!(train_forward(&x, Some(&w), None, 1e-5, || false).is_some(), "under no_grad");
        assert!(train_forward(&x, Some(&w.detach()), None, 1e-5, || true).is_some(), "constants");
    }
}
