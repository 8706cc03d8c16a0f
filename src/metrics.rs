//! Ranking and regression metrics, with NASLib's names: spearman, kendalltau (tau-b), kt_2dec and
//! kt_1dec (Kendall on values rounded to 2 or 1 decimals, as NASLib reports), pearson, mae, rmse,
//! precision@k (share of the true top-k among the predicted top-k) and ndcg@k.
//! Pure functions on slices; NaN inputs give NaN out rather than a silently wrong number.

/// Average ranks (1-based; ties share their mean rank), as scipy's `rankdata`.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

fn has_nan(x: &[f64]) -> bool {
    x.iter().any(|v| v.is_nan())
}

/// Pearson correlation; NaN for fewer than 2 points, constant input or NaN values.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 || has_nan(x) || has_nan(y) {
        return f64::NAN;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rank correlation (Pearson on average ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if has_nan(x) || has_nan(y) {
        return f64::NAN;
    }
    pearson(&ranks(x), &ranks(y))
}

/// Kendall's tau-b (ties handled as scipy.stats.kendalltau does), O(n log n).
pub fn kendall_tau(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 || has_nan(x) || has_nan(y) {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(y[a].total_cmp(&y[b])));
    let pairs = |v: u64| v * v.saturating_sub(1) / 2;
    // ties in x, and joint ties
    let (mut tx, mut txy) = (0u64, 0u64);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        tx += pairs((j - i + 1) as u64);
        let mut k = i;
        while k <= j {
            let mut l = k;
            while l < j && y[idx[l + 1]] == y[idx[k]] {
                l += 1;
            }
            txy += pairs((l - k + 1) as u64);
            k = l + 1;
        }
        i = j + 1;
    }
    // discordant pairs = inversions of y in x order (merge sort)
    let mut ys: Vec<f64> = idx.iter().map(|&k| y[k]).collect();
    let swaps = count_inversions(&mut ys);
    // ties in y (ys is now sorted)
    let mut ty = 0u64;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && ys[j + 1] == ys[i] {
            j += 1;
        }
        ty += pairs((j - i + 1) as u64);
        i = j + 1;
    }
    let n0 = pairs(n as u64);
    let con_minus_dis = n0 as f64 - tx as f64 - ty as f64 + txy as f64 - 2.0 * swaps as f64;
    let denom = ((n0 - tx) as f64 * (n0 - ty) as f64).sqrt();
    if denom == 0.0 {
        f64::NAN
    } else {
        con_minus_dis / denom
    }
}

fn count_inversions(v: &mut [f64]) -> u64 {
    let n = v.len();
    if n < 2 {
        return 0;
    }
    let mid = n / 2;
    let mut inv = count_inversions(&mut v[..mid]) + count_inversions(&mut v[mid..]);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, mid);
    while i < mid && j < n {
        if v[j] < v[i] {
            inv += (mid - i) as u64;
            merged.push(v[j]);
            j += 1;
        } else {
            merged.push(v[i]);
            i += 1;
        }
    }
    merged.extend_from_slice(&v[i..mid]);
    merged.extend_from_slice(&v[j..n]);
    v.copy_from_slice(&merged);
    inv
}

/// Kendall's tau on values rounded to `decimals` (NASLib's kt_2dec / kt_1dec).
pub fn kendall_rounded(x: &[f64], y: &[f64], decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    let r = |v: &[f64]| v.iter().map(|a| (a * f).round() / f).collect::<Vec<_>>();
    kendall_tau(&r(x), &r(y))
}

/// Mean absolute error.
pub fn mae(pred: &[f64], truth: &[f64]) -> f64 {
    let n = pred.len().min(truth.len());
    pred.iter().zip(truth).map(|(p, t)| (p - t).abs()).sum::<f64>() / n as f64
}

/// Root mean squared error.
pub fn rmse(pred: &[f64], truth: &[f64]) -> f64 {
    let n = pred.len().min(truth.len());
    (pred.iter().zip(truth).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / n as f64).sqrt()
}

fn top_k(x: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Share of the true top-k (by `truth`) found in the predicted top-k.
pub fn precision_at_k(pred: &[f64], truth: &[f64], k: usize) -> f64 {
    let k = k.min(pred.len());
    if k == 0 {
        return f64::NAN;
    }
    let p = top_k(pred, k);
    let t = top_k(truth, k);
    p.iter().filter(|i| t.contains(i)).count() as f64 / k as f64
}

/// NDCG@k with the true values (shifted to be non-negative) as gains, as GENNAPE reports it.
pub fn ndcg_at_k(pred: &[f64], truth: &[f64], k: usize) -> f64 {
    let k = k.min(pred.len());
    if k == 0 || has_nan(pred) || has_nan(truth) {
        return f64::NAN;
    }
    let lo = truth.iter().cloned().fold(f64::INFINITY, f64::min);
    let gain = |i: usize| truth[i] - lo;
    let dcg = |order: &[usize]| {
        order.iter().enumerate().map(|(r, &i)| gain(i) / ((r + 2) as f64).log2()).sum::<f64>()
    };
    let ideal = dcg(&top_k(truth, k));
    if ideal == 0.0 {
        return f64::NAN;
    }
    dcg(&top_k(pred, k)) / ideal
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // scipy: spearmanr([1,2,3,4,5],[5,6,7,8,7]) = 0.8207826816681233
        assert!(
            (spearman(&[1., 2., 3., 4., 5.], &[5., 6., 7., 8., 7.]) - 0.820_782_681_668_123_3)
                .abs()
                < 1e-12
        );
        // scipy: kendalltau([12,2,1,12,2],[1,4,7,1,0]) = -0.4714045207910316 (tau-b)
        let t = kendall_tau(&[12., 2., 1., 12., 2.], &[1., 4., 7., 1., 0.]);
        assert!((t + 0.471_404_520_791_031_6).abs() < 1e-12, "{t}");
        assert_eq!(ranks(&[3., 1., 3., 2.]), vec![3.5, 1., 3.5, 2.]);
        assert!((pearson(&[1., 2., 3.], &[2., 4., 6.]) - 1.0).abs() < 1e-12);
        assert!(spearman(&[1., f64::NAN], &[1., 2.]).is_nan());
        assert_eq!(precision_at_k(&[0.1, 0.9, 0.5], &[1., 3., 2.], 1), 1.0);
        assert!((ndcg_at_k(&[1., 2., 3.], &[1., 2., 3.], 3) - 1.0).abs() < 1e-12);
        assert_eq!(rmse(&[1., 3.], &[1., 1.]), 2f64.sqrt());
        assert_eq!(mae(&[1., 3.], &[1., 1.]), 1.0);
    }

    fn kendall_naive(x: &[f64], y: &[f64]) -> f64 {
        let n = x.len();
        let (mut c, mut d, mut tx, mut ty) = (0f64, 0f64, 0f64, 0f64);
        for i in 0..n {
            for j in i + 1..n {
                let a = (x[i] - x[j]).signum() * if x[i] == x[j] { 0.0 } else { 1.0 };
                let b = (y[i] - y[j]).signum() * if y[i] == y[j] { 0.0 } else { 1.0 };
                if a == 0.0 && b == 0.0 {
                } else if a == 0.0 {
                    tx += 1.0;
                } else if b == 0.0 {
                    ty += 1.0;
                } else if a == b {
                    c += 1.0;
                } else {
                    d += 1.0;
                }
            }
        }
        (c - d) / ((c + d + tx) * (c + d + ty)).sqrt()
    }

    proptest! {
        #[test]
        fn kendall_matches_the_quadratic_definition(v in proptest::collection::vec((0i32..6, 0i32..6), 3..40)) {
            let x: Vec<f64> = v.iter().map(|p| p.0 as f64).collect();
            let y: Vec<f64> = v.iter().map(|p| p.1 as f64).collect();
            let fast = kendall_tau(&x, &y);
            let slow = kendall_naive(&x, &y);
            prop_assert!((fast.is_nan() && slow.is_nan()) || (fast - slow).abs() < 1e-9, "{} vs {}", fast, slow);
        }

        #[test]
        fn correlations_are_bounded_and_rank_invariant(v in proptest::collection::vec(-1e3f64..1e3, 3..50)) {
            let y: Vec<f64> = v.iter().map(|a| a.powi(3) + 2.0).collect();
            let s = spearman(&v, &y);
            prop_assert!(s.is_nan() || (s - 1.0).abs() < 1e-9);
            let k = kendall_tau(&v, &y);
            prop_assert!(k.is_nan() || (k - 1.0).abs() < 1e-9);
            let p = pearson(&v, &y);
            prop_assert!(p.is_nan() || (-1.0 - 1e-9..=1.0 + 1e-9).contains(&p));
        }
    }
}
