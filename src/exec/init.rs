//! Weight initialisation schemes, generated in Rust from a seed so that a network's weights
//! do not depend on libtorch's global generator or on which thread builds it; and what they
//! read of each parameter: its role and its fan-in.

use super::Role;
use crate::dataset::SplitMix64;
use crate::graph::{OpNode, Operand};

/// How parameters are initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// PyTorch's defaults for a freshly built network: conv/linear weights Kaiming-uniform with
    /// `a = sqrt(5)` (bound `1/sqrt(fan_in)`), biases uniform in `±1/sqrt(fan_in)`,
    /// normalisation scale 1 and shift 0; other parameters (embeddings, tokens, layer scales)
    /// `N(0, 0.02)`, the usual transformer choice.
    Default,
    /// SWAP's `network_weight_gaussian_init`: conv/linear weights `N(0, 1)`, biases 0,
    /// normalisation scale 1 and shift 0; other parameters as [`Init::Default`].
    Gaussian,
    /// epsinas' constant init: every weight (conv, linear, normalisation scale, others) the
    /// constant, every bias and shift 0.
    Constant(f64),
    /// The absolute value of the current weights (SynFlow's linearisation).
    Abs,
    /// The values stored in the file (an error for files exported without weights).
    File,
}

/// The role a static operand plays at `slot` of `node`, if it is a parameter.
pub(super) fn role_of(node: &OpNode, op: &Operand) -> Role {
    match (node.onnx_op.as_str(), op.slot) {
        ("Conv", 1) => Role::Weight,
        ("ConvTranspose", 1) => Role::TransposedWeight,
        ("Conv" | "ConvTranspose" | "Gemm", 2) => Role::Bias,
        ("Gemm" | "MatMul", _) => Role::Weight,
        (
            "BatchNormalization"
            | "LayerNormalization"
            | "GroupNormalization"
            | "InstanceNormalization",
            1,
        ) => Role::NormScale,
        (
            "BatchNormalization"
            | "LayerNormalization"
            | "GroupNormalization"
            | "InstanceNormalization",
            2,
        ) => Role::NormShift,
        _ => Role::Other,
    }
}

/// PyTorch's fan-in of a weight: dimension 1 times the receptive field for convolutions, the
/// input features for linear layers.
pub(super) fn fan_in(node: &OpNode, op: &Operand) -> usize {
    let s = &op.shape;
    match node.onnx_op.as_str() {
        "Conv" | "ConvTranspose" => {
            s.get(1).copied().unwrap_or(1) * s.iter().skip(2).product::<usize>().max(1)
        }
        "Gemm" => {
            let trans_b = node.attr_int("transB", 0) != 0;
            if op.slot == 1 && trans_b {
                s.get(1).copied().unwrap_or(1)
            } else {
                s.first().copied().unwrap_or(1)
            }
        }
        "MatMul" if s.len() >= 2 => s[s.len() - 2],
        _ => s.iter().skip(1).product::<usize>().max(1),
    }
}

/// The values of one parameter under `init` (not `Abs`/`File`, which the executor handles),
/// or the allocation error when there is no memory for them: a run capped in address space
/// (`proxies::memory::cap_address_space`) must fail this network's proxies, not abort.
pub(super) fn values(
    init: Init,
    role: Role,
    fan_in: usize,
    numel: i64,
    seed: u64,
    index: u64,
) -> Result<Vec<f64>, String> {
    let n = numel.max(0) as usize;
    // one more than n: Box-Muller draws in pairs (the buffer then never grows)
    let mut out = crate::error::try_vec(n + 1, || "its values".into())?;
    let mut rng = SplitMix64(
        seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x5851_F42D_4C95_7F2D),
    );
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    match (init, role) {
        (Init::Constant(_), Role::Bias | Role::NormShift) => out.resize(n, 0.0),
        (Init::Constant(c), _) => out.resize(n, c),
        (_, Role::NormScale) => out.resize(n, 1.0),
        (_, Role::NormShift) => out.resize(n, 0.0),
        (Init::Gaussian, Role::Bias) => out.resize(n, 0.0),
        (Init::Gaussian, Role::Weight | Role::TransposedWeight) => {
            normals(&mut out, &mut rng, n, 1.0)
        }
        (_, Role::Weight | Role::TransposedWeight | Role::Bias) => {
            out.extend((0..n).map(|_| -bound + 2.0 * bound * unit(&mut rng)))
        }
        (_, Role::Other) => normals(&mut out, &mut rng, n, 0.02),
    }
    Ok(out)
}

/// A uniform number in [0, 1) with 53 random bits.
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next() >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` draws of `N(0, std^2)` (Box-Muller) into `out` (empty, room for `n + 1`).
fn normals(out: &mut Vec<f64>, rng: &mut SplitMix64, n: usize, std: f64) {
    while out.len() < n {
        let u1 = unit(rng).max(f64::MIN_POSITIVE);
        let u2 = unit(rng);
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let (sin, cos) = sin_cos(std::f64::consts::TAU * u2);
        out.push(r * cos);
        out.push(r * sin);
    }
    out.truncate(n);
}

/// `(t.sin(), t.cos())`, bit for bit, in one call to glibc's `sincos`, which shares the
/// argument's reduction (0.6x the time of the two calls; SWAP draws 32 Gaussian networks, and
/// the two calls were 15% of its time on NB-201's largest cell). Elsewhere the two calls.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sin_cos(t: f64) -> (f64, f64) {
    extern "C" {
        fn sincos(x: f64, sin: *mut f64, cos: *mut f64);
    }
    let (mut s, mut c) = (0.0, 0.0);
    // SAFETY: sincos writes one f64 through each pointer, both valid for the call.
    unsafe { sincos(t, &mut s, &mut c) };
    (s, c)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn sin_cos(t: f64) -> (f64, f64) {
    (t.sin(), t.cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_weights_respect_the_kaiming_bound_and_are_seeded() {
        let a = values(Init::Default, Role::Weight, 27, 1000, 7, 0).unwrap();
        let b = values(Init::Default, Role::Weight, 27, 1000, 7, 0).unwrap();
        let c = values(Init::Default, Role::Weight, 27, 1000, 8, 0).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = 1.0 / 27f64.sqrt();
        assert!(a.iter().all(|v| v.abs() <= bound));
        // spread close to the uniform's: variance bound^2/3
        let var = a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64;
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.15, "{var}");
    }

    #[test]
    fn gaussian_weights_are_standard_normal_and_biases_zero() {
        let w = values(Init::Gaussian, Role::Weight, 9, 20_000, 1, 3).unwrap();
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / w.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        assert!(values(Init::Gaussian, Role::Bias, 9, 5, 1, 3).unwrap().iter().all(|&v| v == 0.0));
        assert!(values(Init::Gaussian, Role::NormScale, 9, 5, 1, 3)
            .unwrap()
            .iter()
            .all(|&v| v == 1.0));
    }

    #[test]
    fn one_sincos_call_gives_the_bits_of_sin_and_cos() {
        // the angles Box-Muller draws, and a few awkward ones: every weight a seed gives
        // depends on this equality, so it is checked on the machine that runs
        let mut rng = SplitMix64(42);
        let awkward = [0.0, -0.0, 1e-300, std::f64::consts::PI, std::f64::consts::TAU, 1e22];
        let drawn = (0..1_000_000).map(|_| std::f64::consts::TAU * unit(&mut rng));
        for t in awkward.into_iter().chain(drawn) {
            let (s, c) = sin_cos(t);
            // two opaque copies, so that the compiler cannot fuse the two calls into sincos
            let (a, b) = (std::hint::black_box(t), std::hint::black_box(t));
            assert_eq!((s.to_bits(), c.to_bits()), (a.sin().to_bits(), b.cos().to_bits()), "{t}");
        }
    }

    #[test]
    fn constant_init_sets_weights_and_zeroes_biases() {
        assert_eq!(values(Init::Constant(1e-7), Role::Weight, 3, 2, 0, 0).unwrap(), vec![1e-7; 2]);
        assert_eq!(
            values(Init::Constant(1e-7), Role::NormScale, 3, 2, 0, 0).unwrap(),
            vec![1e-7; 2]
        );
        assert_eq!(values(Init::Constant(1e-7), Role::Bias, 3, 2, 0, 0).unwrap(), vec![0.0; 2]);
    }
}
