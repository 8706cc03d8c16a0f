//! Counting on the binary codes of ReLU activations: NASWOT's agreement matrix and SWAP's
//! distinct patterns, on codes packed into 64-bit words, and the distinct tensors among a
//! forward pass's ReLU taps (ReLUs on one input read it once).

use crate::exec::{Tap, TchResult};
use tch::{Device, Kind, TchError, Tensor};

/// `n` zeroed values, or libtorch's kind of out-of-memory error: the codes of a large network
/// are hundreds of megabytes, and a Rust allocation that fails aborts the whole run where this
/// fails one network's proxy (a run's address space is capped, `memory::cap_address_space`).
fn zeroed<T: Clone + Default>(n: usize) -> TchResult<Vec<T>> {
    let bytes = || n.saturating_mul(std::mem::size_of::<T>());
    let mut v = crate::error::try_vec(n, || format!("{} bytes of activation codes", bytes()))
        .map_err(TchError::Torch)?;
    v.resize(n, T::default());
    Ok(v)
}

/// A tensor of binary codes (booleans, or 0/1 values) as bytes in row-major order, on the CPU.
pub(crate) fn code_bytes(codes: &Tensor) -> TchResult<Vec<u8>> {
    let c = codes.f_to_kind(Kind::Uint8)?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let n = c.numel();
    let mut out = zeroed::<u8>(n)?;
    c.f_copy_data(&mut out, n)?;
    Ok(out)
}

/// Adds `times` x (c c^T + (1 - c)(1 - c)^T) to the row-major `n x n` matrix `k`, for the binary
/// codes c of `bits` (`n` rows of U units, row-major): entry (i, j) is the number of units where
/// samples i and j agree, U - hamming(c_i, c_j), counted on codes packed 64 units to a word.
/// Integers, so exact in float64 (the same as the float matrix products they replace).
pub(crate) fn add_agreements(k: &mut [f64], bits: &[u8], n: usize, times: f64) -> TchResult<()> {
    let units = bits.len() / n.max(1);
    let words = units.div_ceil(64);
    let mut packed = zeroed::<u64>(n * words)?;
    for (row, dst) in bits.chunks_exact(units.max(1)).zip(packed.chunks_exact_mut(words.max(1))) {
        for (chunk, w) in row.chunks(64).zip(dst.iter_mut()) {
            *w = chunk.iter().enumerate().fold(0, |acc, (b, &v)| acc | u64::from(v != 0) << b);
        }
    }
    let row = |i: usize| &packed[i * words..(i + 1) * words];
    for i in 0..n {
        for j in i..n {
            let differ: u32 = row(i).iter().zip(row(j)).map(|(a, b)| (a ^ b).count_ones()).sum();
            let v = (units - differ as usize) as f64 * times;
            k[i * n + j] += v;
            if i != j {
                k[j * n + i] += v;
            }
        }
    }
    Ok(())
}

/// The distinct tensors among `taps`, each with how many taps hold it: the ReLU nodes on one
/// input tap shallow copies of one tensor (NAS cells export a ReLU per edge), so a sum over
/// ReLUs can read each input once.
pub(crate) fn distinct_taps(taps: &[Tap]) -> Vec<(&Tap, usize)> {
    let same = |a: &Tensor, b: &Tensor| {
        a.data_ptr() == b.data_ptr() && a.size() == b.size() && a.stride() == b.stride()
    };
    let mut out: Vec<(&Tap, usize)> = Vec::new();
    for t in taps {
        match out.iter_mut().find(|(u, _)| same(&u.value, &t.value)) {
            Some((_, m)) => *m += 1,
            None => out.push((t, 1)),
        }
    }
    out
}

/// The number of distinct columns of a row-major `rows x cols` 0/1 matrix (`bits.len()` =
/// rows x cols): SWAP's distinct per-unit activation patterns across the samples. Up to 24 rows
/// (SWAP's 16 samples) each column's pattern is a number below 2^rows, marked in a bitmap;
/// beyond, each column is packed into 64-bit words, then sorted and deduplicated.
pub(crate) fn distinct_columns(bits: &[u8], rows: usize) -> TchResult<usize> {
    if rows == 0 || bits.is_empty() {
        return Ok(0);
    }
    let cols = bits.len() / rows;
    if rows <= 24 {
        let mut keys = zeroed::<u32>(cols)?;
        for (r, row) in bits.chunks_exact(cols).enumerate() {
            for (k, &b) in keys.iter_mut().zip(row) {
                *k |= u32::from(b != 0) << r;
            }
        }
        let mut seen = vec![0u64; (1usize << rows).div_ceil(64)];
        let mut distinct = 0;
        for k in keys {
            let (word, bit) = (k as usize / 64, k % 64);
            distinct += usize::from(seen[word] >> bit & 1 == 0);
            seen[word] |= 1 << bit;
        }
        return Ok(distinct);
    }
    let words = rows.div_ceil(64);
    let mut keys = zeroed::<u64>(cols * words)?;
    for (r, row) in bits.chunks_exact(cols).enumerate() {
        let (w, shift) = (r / 64, r % 64);
        for (c, &b) in row.iter().enumerate() {
            keys[c * words + w] |= u64::from(b != 0) << shift;
        }
    }
    let mut cols: Vec<&[u64]> = keys.chunks_exact(words).collect();
    cols.sort_unstable();
    cols.dedup();
    Ok(cols.len())
}

#[cfg(test)]
mod tests {
    use super::{add_agreements, distinct_columns};

    #[test]
    fn agreements_count_the_units_where_two_samples_agree() {
        // 5 samples x 130 units (three words, the last partial), twice into one matrix
        let (n, units) = (5, 130);
        let bits: Vec<u8> = (0..n * units).map(|i| u8::from((i * 7919 % 11) < 5)).collect();
        let mut k = vec![0.0; n * n];
        add_agreements(&mut k, &bits, n, 1.0).unwrap();
        add_agreements(&mut k, &bits, n, 2.0).unwrap();
        for i in 0..n {
            for j in 0..n {
                let agree = (0..units).filter(|&u| bits[i * units + u] == bits[j * units + u]);
                assert_eq!(k[i * n + j], 3.0 * agree.count() as f64, "({i}, {j})");
            }
        }
    }

    #[test]
    fn distinct_columns_counts_patterns_across_rows() {
        // 3 rows x 4 columns: columns (1,0,1), (1,0,1), (0,0,0), (0,1,0) -> 3 distinct
        let bits = [1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0];
        assert_eq!(distinct_columns(&bits, 3).unwrap(), 3);
        // 24 rows (the bitmap) and 25 (the sort) count the same patterns
        for rows in [24, 25] {
            let bits: Vec<u8> = (0..rows * 300).map(|i| u8::from((i * 7919 % 13) < 6)).collect();
            let cols = 300;
            let mut patterns: Vec<Vec<u8>> =
                (0..cols).map(|c| (0..rows).map(|r| bits[r * cols + c]).collect()).collect();
            patterns.sort();
            patterns.dedup();
            assert_eq!(distinct_columns(&bits, rows).unwrap(), patterns.len(), "{rows} rows");
        }
        // more than 64 rows: columns differ only in row 70
        let rows = 71;
        let mut bits = vec![1u8; rows * 2];
        bits[70 * 2 + 1] = 0;
        assert_eq!(distinct_columns(&bits, rows).unwrap(), 2);
        bits[70 * 2 + 1] = 1;
        assert_eq!(distinct_columns(&bits, rows).unwrap(), 1);
        assert_eq!(distinct_columns(&[], 4).unwrap(), 0);
    }
}
