//! ONNX Runtime's `MatMulNBits` (com.microsoft), the 4-bit weights of language models from its
//! `MatMulNBitsQuantizer`, Olive and onnxruntime-genai: `A · W` with `W` of `[K, N]` stored
//! transposed, `[N, K / block_size, block_size * bits / 8]` bytes, values packed low bits
//! first; a float scale per block, and a zero point per block (packed like the values, or
//! float; `2^(bits - 1)` when absent). Read as `MatMul(A, W)` on the dequantized weight, plus
//! the bias, or on a weight declared by its shape where the values are not in the reading.

use super::values::values;
use super::{int_attr, node, Rewrite};
use tract_onnx::pb;

/// The attributes that say how `W` is stored.
#[derive(Clone, Copy)]
struct Layout {
    k: usize,
    n: usize,
    bits: usize,
    block: usize,
}

impl Layout {
    fn of(n: &pb::NodeProto) -> Option<Layout> {
        let at = |name, default| usize::try_from(int_attr(n, name, default)).ok();
        let l = Layout {
            k: at("K", 0)?,
            n: at("N", 0)?,
            bits: at("bits", 4)?,
            block: at("block_size", 0)?,
        };
        let fits = l.k > 0 && l.n > 0 && matches!(l.bits, 2 | 4 | 8);
        (fits && l.block >= 8 && l.block.is_power_of_two()).then_some(l)
    }

    fn blocks(&self) -> usize {
        self.k.div_ceil(self.block)
    }

    /// Value `i` of a packed row of `bits`-wide values.
    fn unpack(&self, bytes: &[f32], i: usize) -> Option<f32> {
        let bit = i * self.bits;
        let byte = *bytes.get(bit / 8)? as u32;
        Some(((byte >> (bit % 8)) & ((1 << self.bits) - 1)) as f32)
    }
}

/// `MatMulNBits(A, B, scales, zero_points, g_idx, bias)` as `MatMul(A, W) + bias`. A form it
/// does not read (a `g_idx` reordering, other widths) is kept, and the note says its weight is
/// not counted.
pub(super) fn matmul_nbits(rw: &mut Rewrite, n: pb::NodeProto) {
    let (Some(l), None) = (Layout::of(&n), rw.input(&n, 4)) else {
        rw.count("unread");
        return rw.keep(n);
    };
    let (Some(a), Some(out)) = (rw.input(&n, 0), n.output.first().cloned()) else {
        return rw.keep(n);
    };
    let name = format!("{out}/nape_w");
    let dims = vec![l.k as i64, l.n as i64];
    let w = match weight(rw, &n, l) {
        Some(data) => rw.weight(name, dims, &data),
        None => rw.declare(name, dims),
    };
    let bias = rw.input(&n, 5);
    let product = if bias.is_some() { format!("{out}/nape_product") } else { out.clone() };
    rw.emit(node("MatMul", &n.name, vec![a, w], vec![product.clone()]));
    if let Some(b) = bias {
        rw.emit(node("Add", &format!("{}/nape_bias", n.name), vec![product, b], vec![out]));
    }
    rw.count("MatMulNBits");
}

/// `W` of `[K, N]`, `(q - zero_point) * scale`, when the reading holds its bytes and scales.
fn weight(rw: &Rewrite, n: &pb::NodeProto, l: Layout) -> Option<Vec<f32>> {
    let q = values(rw.consts.get(&rw.input(n, 1)?)?)?.data;
    let scales = rw.constant(n, 2)?.data;
    let (blocks, blob) = (l.blocks(), l.block * l.bits / 8);
    if q.len() != l.n * blocks * blob || scales.len() != l.n * blocks {
        return None;
    }
    // zero points: none, or a constant the reading holds (packed integers, or floats)
    let zp = match rw.input(n, 3) {
        Some(z) => {
            let t = rw.consts.get(&z)?;
            Some((values(t)?.data, t.data_type))
        }
        None => None,
    };
    let zp_row = (blocks * l.bits).div_ceil(8);
    let zero = |col: usize, b: usize| -> Option<f32> {
        match &zp {
            None => Some((1 << (l.bits - 1)) as f32),
            Some((z, t)) if super::super::is_float_type(*t) => z.get(col * blocks + b).copied(),
            Some((z, _)) => l.unpack(z.get(col * zp_row..(col + 1) * zp_row)?, b),
        }
    };
    let mut w = vec![0f32; l.k * l.n];
    for col in 0..l.n {
        for b in 0..blocks {
            let bytes = &q[(col * blocks + b) * blob..(col * blocks + b + 1) * blob];
            let (scale, zp) = (scales[col * blocks + b], zero(col, b)?);
            for i in 0..l.block.min(l.k - b * l.block) {
                w[(b * l.block + i) * l.n + col] = (l.unpack(bytes, i)? - zp) * scale;
            }
        }
    }
    Some(w)
}
