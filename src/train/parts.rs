//! Statistics over a mix's parts (one family's target each) and families: which rows form
//! each part, part means and slopes within parts, each part's share of an epoch's batches and
//! of the validation tau; and a robust location and scale for heavy-tailed targets.

use crate::dataset::SplitMix64;

/// The rows of each part, in order: `parts_of(of)[g]` lists the `i` with `of[i] == g`.
pub fn parts_of(of: &[u32]) -> Vec<Vec<usize>> {
    let k = of.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
    let mut parts = vec![Vec::new(); k];
    for (i, &g) in of.iter().enumerate() {
        parts[g as usize].push(i);
    }
    parts
}

/// Each part's mean x and mean y (parts are indexed by `of`).
pub fn part_means(x: &[f64], y: &[f64], of: &[u32]) -> (Vec<f64>, Vec<f64>) {
    let k = of.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
    let (mut sx, mut sy, mut n) = (vec![0.0f64; k], vec![0.0f64; k], vec![0.0f64; k]);
    for ((xi, yi), &g) in x.iter().zip(y).zip(of) {
        sx[g as usize] += xi;
        sy[g as usize] += yi;
        n[g as usize] += 1.0;
    }
    let mean = |s: Vec<f64>| s.iter().zip(&n).map(|(s, c)| s / c.max(1.0)).collect();
    (mean(sx), mean(sy))
}

/// The least-squares slope of `y` on `x` within parts (`of`): on each row's deviations from
/// its part's means, a fixed effect per part (one part: the plain OLS slope). 0 when `x`
/// does not vary within any part.
pub fn slope_within(x: &[f64], y: &[f64], of: &[u32]) -> f64 {
    let (mx, my) = part_means(x, y, of);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for ((xi, yi), &g) in x.iter().zip(y).zip(of) {
        let d = xi - mx[g as usize];
        sxy += d * (yi - my[g as usize]);
        sxx += d * d;
    }
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

/// A mix's rows as [`Trainer::supervised`] reads them: each training and validation row's
/// part, and each part's family. The parts of one family are its targets on the same
/// networks, so a family weighs as one source, however many targets it brings.
#[derive(Debug, Clone, Copy)]
pub struct RowParts<'a> {
    pub train: &'a [u32],
    pub val: &'a [u32],
    pub family: &'a [u32],
}

/// Each part's share of its family: 1 / (the family's parts with rows), 0 for a part
/// without rows (`family[g]`: part `g`'s family; a part beyond it is a family of its own).
pub fn family_shares(parts: &[Vec<usize>], family: &[u32]) -> Vec<f64> {
    let fam = |g: usize| family.get(g).map_or(u64::MAX - g as u64, |&f| u64::from(f));
    (0..parts.len())
        .map(|g| {
            let k = (0..parts.len()).filter(|&h| !parts[h].is_empty() && fam(h) == fam(g)).count();
            if parts[g].is_empty() {
                0.0
            } else {
                1.0 / k as f64
            }
        })
        .collect()
}

/// One epoch's batches of a mix's training rows (`of`: each row's part; `family`: each
/// part's family), each from one part. Family `f` of `n_f` networks gets a share
/// `n_f^temperature / sum n^temperature` of the epoch's `ceil(n / batch)` batches, divided
/// evenly among its parts (at least one batch a part), as multilingual translation models
/// share theirs among languages: NB-201's three targets on the same cells are one source, not
/// three. A part's batches are `min(batch, n_g)` rows drawn without replacement from its rows
/// in a fresh order each time they run out; the batches then come in a random order. Parts of
/// fewer than 2 rows give none.
pub fn group_batches(
    of: &[u32],
    family: &[u32],
    batch: usize,
    temperature: f64,
    rng: &mut SplitMix64,
) -> Vec<Vec<usize>> {
    let mut parts = parts_of(of);
    for p in parts.iter_mut().filter(|p| p.len() < 2) {
        p.clear();
    }
    let share = family_shares(&parts, family);
    let total = of.len().div_ceil(batch.max(2)) as f64;
    let weight: Vec<f64> =
        parts.iter().zip(&share).map(|(p, s)| s * (p.len() as f64).powf(temperature)).collect();
    let sum: f64 = weight.iter().sum();
    let mut out = Vec::new();
    for (rows, w) in parts.iter_mut().zip(&weight).filter(|(p, _)| !p.is_empty()) {
        let size = batch.max(2).min(rows.len());
        let mut pos = rows.len();
        for _ in 0..((total * w / sum).round() as usize).max(1) {
            if pos + size > rows.len() {
                rng.shuffle(rows);
                pos = 0;
            }
            out.push(rows[pos..pos + size].to_vec());
            pos += size;
        }
    }
    rng.shuffle(&mut out);
    out
}

/// The mean over parts (`of`; `family`: each part's family) of Kendall's tau within each
/// part of at least 3 rows, each weighted by its rows: tau's sampling variance goes as 1/n,
/// so this is the inverse-variance estimate of one tau, and a part of 8 validation networks
/// cannot outvote one of 500 (with equal weights it decided early stopping on its own noise).
/// A family's parts share its weight, as they share its networks ([`group_batches`]).
pub fn mean_tau_within(pred: &[f64], truth: &[f64], of: &[u32], family: &[u32]) -> f64 {
    let (mut sum, mut weight) = (0.0, 0.0);
    let parts = parts_of(of);
    for (idx, share) in parts.iter().zip(family_shares(&parts, family)) {
        let p: Vec<f64> = idx.iter().map(|&i| pred[i]).collect();
        let t: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
        let tau = crate::metrics::kendall_tau(&p, &t);
        if idx.len() >= 3 && tau.is_finite() {
            sum += tau * idx.len() as f64 * share;
            weight += idx.len() as f64 * share;
        }
    }
    if weight > 0.0 {
        sum / weight
    } else {
        f64::NAN
    }
}

/// Mean and (population) standard deviation, the latter floored at 1e-8.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-8))
}

/// Median and normal-consistent median absolute deviation (`1.4826 * median |x - median|`,
/// which equals the standard deviation for normal data) of the finite values of `v`: the
/// location and scale of the bulk of a heavy-tailed sample, which one outlier cannot move.
/// Falls back to the standard deviation when more than half the values tie; (0, 1e-8) when
/// nothing is finite.
pub fn median_mad(v: &[f64]) -> (f64, f64) {
    fn median(s: &mut [f64]) -> f64 {
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }
    let mut f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (0.0, 1e-8);
    }
    let med = median(&mut f);
    let mut dev: Vec<f64> = f.iter().map(|x| (x - med).abs()).collect();
    let mad = 1.4826 * median(&mut dev);
    if mad > 1e-12 {
        (med, mad)
    } else {
        (med, mean_std(&f).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_mad_ignores_outliers_that_move_the_std() {
        let bulk: Vec<f64> = (0..49).map(|i| 90.0 + (i as f64 - 24.0) * 0.1).collect();
        let (m0, s0) = median_mad(&bulk);
        let mut tailed = bulk.clone();
        tailed.push(10.0);
        let (m1, s1) = median_mad(&tailed);
        assert!((m0 - 90.0).abs() < 1e-9 && (m1 - m0).abs() < 0.06, "{m0} {m1}");
        assert!((s1 / s0 - 1.0).abs() < 0.05, "MAD moved: {s0} -> {s1}");
        // the std of the same sample grows sevenfold
        assert!(mean_std(&tailed).1 > 7.0 * mean_std(&bulk).1);
        // normal-consistent: a large normal-ish sample has MAD ~ std
        let mut rng = SplitMix64(7);
        let z: Vec<f64> = (0..20000)
            .map(|_| {
                (0..12).map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64).sum::<f64>() - 6.0
            })
            .collect();
        let (_, s) = median_mad(&z);
        assert!((s / mean_std(&z).1 - 1.0).abs() < 0.03, "{s}");
        // ties: falls back to the std; NaN ignored; empty is finite
        let (m, s) = median_mad(&[1.0, 1.0, 1.0, 5.0, f64::NAN]);
        assert_eq!(m, 1.0);
        assert!((s - mean_std(&[1.0, 1.0, 1.0, 5.0]).1).abs() < 1e-12);
        assert!(median_mad(&[]).1 > 0.0);
    }

    #[test]
    fn group_batches_are_pure_and_share_the_epoch_by_size_to_the_temperature() {
        // parts of 900, 100 and 1 rows; batch 50 -> 21 batches in the epoch
        let of: Vec<u32> = (0..1001)
            .map(|i| {
                if i < 900 {
                    0
                } else if i < 1000 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let count = |t: f64| {
            let b = group_batches(&of, &[0, 1, 2], 50, t, &mut SplitMix64(3));
            let mut n = [0usize; 3];
            for batch in &b {
                let g = of[batch[0]];
                assert!(batch.iter().all(|&i| of[i] == g), "a batch mixes parts");
                let mut u = batch.clone();
                u.sort();
                u.dedup();
                assert_eq!(u.len(), batch.len(), "a row twice in one batch");
                n[g as usize] += 1;
            }
            n
        };
        assert_eq!(count(1.0), [19, 2, 0]);
        assert_eq!(count(0.5), [16, 5, 0]);
        assert_eq!(count(0.0), [11, 11, 0]);
        // a part smaller than a batch comes whole
        let b = group_batches(&[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], &[0, 1], 8, 1.0, &mut SplitMix64(1));
        assert!(b.iter().all(|x| x.len() == if of_len(x) { 3 } else { 7 }));
        fn of_len(x: &[usize]) -> bool {
            x[0] < 3
        }
    }

    #[test]
    fn a_family_s_targets_share_its_batches() {
        // family 0: two targets on the same 400 networks; family 1: one target on 400
        let of: Vec<u32> = (0..1200).map(|i| (i / 400) as u32).collect();
        let b = group_batches(&of, &[0, 0, 1], 50, 0.5, &mut SplitMix64(5));
        let mut n = [0usize; 3];
        for batch in &b {
            n[of[batch[0]] as usize] += 1;
        }
        // 24 batches: half to each family, family 0's half split between its targets
        assert_eq!(n, [6, 6, 12]);
        // each part its own family: a third each
        let b = group_batches(&of, &[0, 1, 2], 50, 0.5, &mut SplitMix64(5));
        assert!(b.len() == 24 && b.iter().filter(|x| of[x[0]] == 2).count() == 8);
        assert_eq!(family_shares(&parts_of(&of), &[0, 0, 1]), vec![0.5, 0.5, 1.0]);
    }

    #[test]
    fn the_validation_tau_of_a_mix_is_the_parts_mean() {
        // within each part the prediction ranks perfectly; across parts it runs backwards
        let pred = [1.0, 2.0, 3.0, 11.0, 12.0, 13.0];
        let truth = [10.0, 20.0, 30.0, 1.0, 2.0, 3.0];
        assert!((mean_tau_within(&pred, &truth, &[0, 0, 0, 1, 1, 1], &[0, 1]) - 1.0).abs() < 1e-12);
        assert!(crate::metrics::kendall_tau(&pred, &truth) < 0.0);
        assert!(mean_tau_within(&pred, &truth, &[0, 0, 1, 1, 2, 2], &[0, 1, 2]).is_nan());
        // weighted by rows: 3 rows ranked right, 5 ranked backwards -> (3 - 5) / 8
        let pred = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let truth = [1.0, 2.0, 3.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        let tau = mean_tau_within(&pred, &truth, &[0, 0, 0, 1, 1, 1, 1, 1], &[0, 1]);
        assert!((tau + 0.25).abs() < 1e-12, "{tau}");
        // parts 0 and 1 of one family, part 2 of another: the family's two taus weigh as one
        let pred = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let truth = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0];
        let tau = mean_tau_within(&pred, &truth, &[0, 0, 0, 1, 1, 1, 2, 2, 2], &[0, 0, 1]);
        assert!(tau.abs() < 1e-12, "{tau}");
    }
}
