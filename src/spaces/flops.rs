//! The FLOP count behind NAS-Bench-Suite-Zero's published `flops` proxy, over a [`Cg`].
//!
//! NASLib's `flops` measure (the values in `naslib_zc/*.jsonl`, in millions) runs
//! tensorwatch's `ModelStats`, i.e. torchstat's per-module counter, on the PyTorch model with a
//! batch of one. Its conventions differ from nape's own FLOPs (2 per multiply-accumulate, see
//! `docs/costs.md`); [`torchstat_flops`] reproduces them node by node:
//!
//! | node | count (N = batch) |
//! |---|---|
//! | Conv | `N * H_out * W_out * k_h * k_w * C_in * (C_out / groups)` (+ `N * H_out * W_out * C_out` with a bias): one per multiply-accumulate |
//! | Linear (Gemm) | `N * in * out`; the bias is not counted |
//! | BatchNorm | `2 * numel(input)` (affine) |
//! | ReLU | `numel(input)` |
//! | MaxPool, AvgPool | `N * C * H_out * W_out * k_h * k_w`; a 1x1 pool is a strided subsample (PyTorch indexing, not a module), 0 |
//! | GlobalAvgPool | `N * C * (H + 1) * (W + 1)` (torchstat's adaptive-pool formula for a 1x1 output) |
//! | everything else (Add, Concat, Zero, Slice, Flatten, ...) | 0 (not modules, or modules torchstat does not count) |

use crate::graph::{Cg, OpKind};

/// FLOPs as torchstat counts them (see the module docs).
pub fn torchstat_flops(cg: &Cg) -> u64 {
    let numel = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
    cg.nodes()
        .map(|(_, n)| {
            let input = n.in_shapes.first().map(|s| s.as_slice()).unwrap_or(&[]);
            let out = n.out_shape();
            let kernel = n.attrs.kernel.iter().map(|&k| k as u64).product::<u64>();
            match n.kind {
                OpKind::Conv if input.len() == 4 && out.len() == 4 => {
                    let groups = n.attrs.groups.unwrap_or(1).max(1) as u64;
                    let positions = (out[0] * out[2] * out[3]) as u64;
                    let per = kernel * input[1] as u64 * (out[1] as u64 / groups);
                    let bias = if n.attrs.bias == Some(true) { out[1] as u64 } else { 0 };
                    positions * (per + bias)
                }
                OpKind::Linear if input.len() == 2 && out.len() == 2 => {
                    (input[0] * input[1] * out[1]) as u64
                }
                OpKind::BatchNorm => 2 * numel(input),
                OpKind::Relu => numel(input),
                OpKind::MaxPool | OpKind::AvgPool if kernel > 1 => numel(out) * kernel,
                OpKind::GlobalAvgPool if input.len() == 4 => {
                    (input[0] * input[1] * (input[2] + 1) * (input[3] + 1)) as u64
                }
                _ => 0,
            }
        })
        .sum()
}

/// [`torchstat_flops`] in millions, the unit of NAS-Bench-Suite-Zero's `flops` for NB-201
/// (and TransNAS-Bench-101).
pub fn nb201_mflops(cg: &Cg) -> f64 {
    torchstat_flops(cg) as f64 / 1e6
}
