//! Fuzzy c-means (Bezdek), pure Rust on ndarray, with linfa-style parameters.
//!
//! The predictor clusters graph embeddings with it and mixes its heads by the memberships
//! (GENNAPE, ANCHORS.md section 1.3). For points x_i and centres c_k, with fuzziness m > 1,
//! the membership of x_i in cluster k is
//!
//! `u_ik = 1 / sum_j (|x_i - c_k| / |x_i - c_j|)^(2/(m-1))`,
//!
//! every row of memberships sums to 1, and a point lying on a centre belongs to it fully
//! (shared equally among centres it lies on). Fitting alternates memberships and centres
//! `c_k = sum_i u_ik^m x_i / sum_i u_ik^m` from a k-means++ start drawn with the given seed,
//! until no centre moves by more than `tol` (largest coordinate change) or `max_iter` rounds.
//!
//! `FuzzyCMeansParams::new(k)` -> `.m(..)`, `.max_iter(..)`, `.tol(..)`, `.seed(..)` ->
//! `.check()?` -> `.fit(&x)?` -> [`FuzzyCMeans`], which serialises (serde) to its centres and
//! `m`, so a checkpoint's `meta.json` can carry it. Same data and seed, same result.

use crate::dataset::SplitMix64;
use crate::error::{Error, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

const WHAT: &str = "fuzzy c-means";

fn fit_error(msg: impl Into<String>) -> Error {
    Error::Fit { what: WHAT.to_string(), msg: msg.into() }
}

/// The fuzzifier Schwämmle and Jensen (Bioinformatics 26(22), 2010; Mfuzz's `mestimate`) fit
/// for `n` points in `d` dimensions: the largest m for which FCM still finds structure rather
/// than putting every centre on the centre of gravity,
/// `m = 1 + (1418/n + 22.05) d^-2 + (12.33/n + 0.243) d^(-0.0406 ln n - 0.1134)`.
/// The usual m = 2 suits a few dimensions; it is about 1.04 for 5,000 points in 64.
pub fn fuzzifier_for(n: usize, d: usize) -> f64 {
    let (n, d) = (n.max(2) as f64, d.max(1) as f64);
    1.0 + (1418.0 / n + 22.05) * d.powi(-2)
        + (12.33 / n + 0.243) * d.powf(-0.0406 * n.ln() - 0.1134)
}

/// Parameters of fuzzy c-means, before validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzyCMeansParams {
    /// Number of clusters.
    pub k: usize,
    /// Fuzziness m > 1 (2 is the usual choice; near 1 approaches k-means).
    pub m: f64,
    /// Most rounds of the alternating updates.
    pub max_iter: usize,
    /// Stop when no centre coordinate moves more than this.
    pub tol: f64,
    /// Seed of the k-means++ start.
    pub seed: u64,
}

/// Parameters that passed [`FuzzyCMeansParams::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct FuzzyCMeansValidParams(FuzzyCMeansParams);

impl FuzzyCMeansParams {
    /// `k` clusters, m = 2, at most 300 rounds, tolerance 1e-6, seed 0.
    pub fn new(k: usize) -> FuzzyCMeansParams {
        FuzzyCMeansParams { k, m: 2.0, max_iter: 300, tol: 1e-6, seed: 0 }
    }

    /// Sets the fuzziness.
    pub fn m(mut self, m: f64) -> Self {
        self.m = m;
        self
    }

    /// Sets the most rounds.
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }

    /// Sets the tolerance.
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates: k >= 1, m finite and > 1, max_iter >= 1, tol finite and >= 0.
    pub fn check(self) -> Result<FuzzyCMeansValidParams> {
        if self.k == 0 {
            return Err(fit_error("k must be at least 1"));
        }
        if !(self.m.is_finite() && self.m > 1.0) {
            return Err(fit_error(format!(
                "fuzziness m must be finite and above 1, got {}",
                self.m
            )));
        }
        if self.max_iter == 0 {
            return Err(fit_error("max_iter must be at least 1"));
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(fit_error(format!("tol must be finite and >= 0, got {}", self.tol)));
        }
        Ok(FuzzyCMeansValidParams(self))
    }
}

impl FuzzyCMeansValidParams {
    /// The validated parameters.
    pub fn params(&self) -> &FuzzyCMeansParams {
        &self.0
    }

    /// Fits the centres to the rows of `x` (at least k rows, every value finite).
    pub fn fit(&self, x: &Array2<f64>) -> Result<FuzzyCMeans> {
        let p = &self.0;
        let (n, d) = x.dim();
        if n < p.k {
            return Err(fit_error(format!("{n} points cannot make {} clusters", p.k)));
        }
        if d == 0 {
            return Err(fit_error("points have no coordinates"));
        }
        if let Some((i, _)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(fit_error(format!("point {} has a non-finite coordinate {}", i.0, i.1)));
        }
        let mut centres = kmeans_pp(x.view(), p.k, p.seed);
        let mut iterations = 0;
        for _ in 0..p.max_iter {
            iterations += 1;
            let u = memberships_of(x.view(), centres.view(), p.m);
            let w = u.mapv(|v| v.powf(p.m));
            let mut next = w.t().dot(x);
            for (k, mut row) in next.axis_iter_mut(Axis(0)).enumerate() {
                let s = w.column(k).sum();
                if s > 0.0 {
                    row /= s;
                } else {
                    row.assign(&centres.row(k));
                }
            }
            let shift = (&next - &centres).iter().fold(0.0f64, |a, v| a.max(v.abs()));
            centres = next;
            if shift <= p.tol {
                break;
            }
        }
        let mut fitted = FuzzyCMeans { centres, m: p.m, iterations, objective: 0.0 };
        fitted.objective = fitted.objective(x);
        Ok(fitted)
    }
}

/// A fitted fuzzy c-means model: its centres and fuzziness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzyCMeans {
    #[serde(with = "rows")]
    centres: Array2<f64>,
    m: f64,
    iterations: usize,
    objective: f64,
}

impl FuzzyCMeans {
    /// A model from given centres (one per row) and fuzziness, e.g. read from a checkpoint.
    pub fn from_centres(centres: Array2<f64>, m: f64) -> Result<FuzzyCMeans> {
        if centres.nrows() == 0 || centres.ncols() == 0 {
            return Err(fit_error("no centres"));
        }
        if !(m.is_finite() && m > 1.0) || centres.iter().any(|v| !v.is_finite()) {
            return Err(fit_error("centres must be finite and m above 1"));
        }
        Ok(FuzzyCMeans { centres, m, iterations: 0, objective: 0.0 })
    }

    /// The centres, one per row.
    pub fn centres(&self) -> ArrayView2<'_, f64> {
        self.centres.view()
    }

    /// The fuzziness m.
    pub fn m(&self) -> f64 {
        self.m
    }

    /// Rounds the fit took.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// The fitted objective sum_i sum_k u_ik^m |x_i - c_k|^2 on the training points (0 for a
    /// model made with [`FuzzyCMeans::from_centres`]).
    pub fn fitted_objective(&self) -> f64 {
        self.objective
    }

    /// The objective on `x`.
    pub fn objective(&self, x: &Array2<f64>) -> f64 {
        let u = self.memberships(x);
        let mut j = 0.0;
        for (i, xi) in x.axis_iter(Axis(0)).enumerate() {
            for (k, ck) in self.centres.axis_iter(Axis(0)).enumerate() {
                j += u[[i, k]].powf(self.m) * sq_dist(xi, ck);
            }
        }
        j
    }

    /// Memberships of the rows of `x` (columns as the centres'): one row per point, one column
    /// per cluster, each row in [0, 1] summing to 1. A row with a non-finite value, or of the
    /// wrong width, gets equal memberships 1/k.
    pub fn memberships(&self, x: &Array2<f64>) -> Array2<f64> {
        memberships_of(x.view(), self.centres.view(), self.m)
    }
}

fn sq_dist(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn memberships_of(x: ArrayView2<f64>, c: ArrayView2<f64>, m: f64) -> Array2<f64> {
    let k = c.nrows();
    let mut u = Array2::zeros((x.nrows(), k));
    let p = 1.0 / (m - 1.0);
    let mut d2 = Array1::zeros(k);
    for (i, xi) in x.axis_iter(Axis(0)).enumerate() {
        let mut row = u.row_mut(i);
        if xi.len() != c.ncols() || xi.iter().any(|v| !v.is_finite()) {
            row.fill(1.0 / k as f64);
            continue;
        }
        for (j, cj) in c.axis_iter(Axis(0)).enumerate() {
            d2[j] = sq_dist(xi, cj);
        }
        let min = d2.iter().cloned().fold(f64::INFINITY, f64::min);
        if min == 0.0 || !min.is_finite() {
            // on a centre (or too far to tell): full membership shared among the nearest
            let at: Vec<usize> = (0..k).filter(|&j| d2[j] == min).collect();
            for &j in &at {
                row[j] = 1.0 / at.len() as f64;
            }
            continue;
        }
        // u_ik = w_k / sum_j w_j with w_k = (min / d2_k)^(1/(m-1)) in (0, 1]
        for j in 0..k {
            row[j] = (min / d2[j]).powf(p);
        }
        let s = row.sum();
        row /= s;
    }
    u
}

/// k-means++ seeding: the first centre uniformly, each next one with probability proportional
/// to the squared distance to the nearest centre chosen so far (uniformly among unchosen
/// points when every distance is 0).
fn kmeans_pp(x: ArrayView2<f64>, k: usize, seed: u64) -> Array2<f64> {
    let n = x.nrows();
    let mut rng = SplitMix64(seed ^ 0xFC3A_11D5_0000_0001);
    let mut uniform = move || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let mut chosen = vec![((uniform() * n as f64) as usize).min(n - 1)];
    let mut nearest: Vec<f64> = (0..n).map(|i| sq_dist(x.row(i), x.row(chosen[0]))).collect();
    while chosen.len() < k {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 && total.is_finite() {
            let mut r = uniform() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if d > 0.0 && r < d {
                    pick = i;
                    break;
                }
                r -= d;
            }
            // rounding can walk off the end: take the farthest point instead
            if nearest[pick] == 0.0 {
                pick = (0..n).max_by(|&a, &b| nearest[a].total_cmp(&nearest[b])).unwrap_or(0);
            }
            pick
        } else {
            let free: Vec<usize> = (0..n).filter(|i| !chosen.contains(i)).collect();
            free[((uniform() * free.len() as f64) as usize).min(free.len() - 1)]
        };
        chosen.push(pick);
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(sq_dist(x.row(i), x.row(pick)));
        }
    }
    let mut c = Array2::zeros((k, x.ncols()));
    for (j, &i) in chosen.iter().enumerate() {
        c.row_mut(j).assign(&x.row(i));
    }
    c
}

/// Serialises an `Array2<f64>` as a list of rows (readable in `meta.json`).
mod rows {
    use ndarray::Array2;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(a: &Array2<f64>, s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Vec<f64>> = a.outer_iter().map(|r| r.to_vec()).collect();
        rows.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Array2<f64>, D::Error> {
        let rows: Vec<Vec<f64>> = Vec::deserialize(d)?;
        let cols = rows.first().map(Vec::len).unwrap_or(0);
        if rows.iter().any(|r| r.len() != cols) {
            return Err(D::Error::custom("centres: rows of different lengths"));
        }
        let flat: Vec<f64> = rows.into_iter().flatten().collect();
        Array2::from_shape_vec((flat.len() / cols.max(1), cols), flat)
            .map_err(|e| D::Error::custom(format!("centres: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blobs(n: usize, seed: u64) -> (Array2<f64>, Vec<usize>) {
        let mut rng = SplitMix64(seed);
        let mut u = move || (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let mut x = Array2::zeros((2 * n, 3));
        let mut label = Vec::new();
        for i in 0..2 * n {
            let c = if i % 2 == 0 { -10.0 } else { 10.0 };
            for j in 0..3 {
                x[[i, j]] = c + u();
            }
            label.push(i % 2);
        }
        (x, label)
    }

    /// `per` points around each of `k` centres (3 along axis i), N(0, 1) noise, `d` dims.
    fn gaussian_blobs(k: usize, per: usize, d: usize, seed: u64) -> Array2<f64> {
        let mut rng = SplitMix64(seed);
        let mut unit = move || ((rng.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let mut x = Array2::zeros((k * per, d));
        for i in 0..k * per {
            for j in 0..d {
                let g = (-2.0 * unit().ln()).sqrt() * (std::f64::consts::TAU * unit()).cos();
                x[[i, j]] = g + if j == i % k { 3.0 } else { 0.0 };
            }
        }
        x
    }

    fn min_centre_distance(f: &FuzzyCMeans) -> f64 {
        let c = f.centres();
        let mut best = f64::INFINITY;
        for a in 0..c.nrows() {
            for b in a + 1..c.nrows() {
                best = best.min(sq_dist(c.row(a), c.row(b)).sqrt());
            }
        }
        best
    }

    #[test]
    fn in_64_dimensions_m_2_collapses_and_the_fitted_fuzzifier_does_not() {
        // four clusters 4.2 apart in 64 dimensions, as a predictor's embeddings: with m = 2
        // every centre lands on the centre of gravity (Winkler et al. 2011); with the
        // Schwaemmle-Jensen fuzzifier the four are found
        let x = gaussian_blobs(4, 100, 64, 1);
        let fit = |m: f64| FuzzyCMeansParams::new(4).m(m).seed(0).check().unwrap().fit(&x).unwrap();
        assert!(min_centre_distance(&fit(2.0)) < 0.1);
        let m = fuzzifier_for(400, 64);
        assert!((1.05..1.1).contains(&m), "{m}");
        assert!(min_centre_distance(&fit(m)) > 3.0);
        // it falls towards 1 with the dimension and stays above it
        assert!(fuzzifier_for(5000, 64) < fuzzifier_for(5000, 8));
        assert!(fuzzifier_for(5000, 2) > 1.5 && fuzzifier_for(100_000, 512) > 1.0);
    }

    #[test]
    fn two_separated_blobs_are_recovered() {
        let (x, label) = blobs(50, 3);
        let f = FuzzyCMeansParams::new(2).seed(1).check().unwrap().fit(&x).unwrap();
        let u = f.memberships(&x);
        let first = if u[[0, 0]] > 0.5 { 0 } else { 1 };
        for (i, &l) in label.iter().enumerate() {
            let k = if l == 0 { first } else { 1 - first };
            assert!(u[[i, k]] > 0.99, "point {i}: {:?}", u.row(i));
        }
        for c in f.centres().outer_iter() {
            assert!(c.iter().all(|v| (v.abs() - 10.0).abs() < 0.5), "{c:?}");
        }
        assert!(f.iterations() < 300);
    }

    #[test]
    fn invalid_parameters_and_data_are_errors() {
        assert!(FuzzyCMeansParams::new(0).check().is_err());
        assert!(FuzzyCMeansParams::new(2).m(1.0).check().is_err());
        assert!(FuzzyCMeansParams::new(2).m(f64::NAN).check().is_err());
        assert!(FuzzyCMeansParams::new(2).tol(-1.0).check().is_err());
        assert!(FuzzyCMeansParams::new(2).max_iter(0).check().is_err());
        let ok = FuzzyCMeansParams::new(3).check().unwrap();
        assert!(ok.fit(&Array2::zeros((2, 2))).is_err());
        let mut x = Array2::zeros((4, 2));
        x[[1, 1]] = f64::INFINITY;
        let e = ok.fit(&x).unwrap_err().to_string();
        assert!(e.contains("point 1"), "{e}");
    }

    #[test]
    fn identical_points_still_fit() {
        let x = Array2::from_elem((5, 2), 1.5);
        let f = FuzzyCMeansParams::new(3).check().unwrap().fit(&x).unwrap();
        let u = f.memberships(&x);
        for r in u.outer_iter() {
            assert!((r.sum() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn serialises_to_rows_and_back() {
        let (x, _) = blobs(10, 5);
        let f = FuzzyCMeansParams::new(2).check().unwrap().fit(&x).unwrap();
        let s = serde_json::to_string(&f).unwrap();
        assert!(s.contains("\"centres\":[["), "{s}");
        let g: FuzzyCMeans = serde_json::from_str(&s).unwrap();
        // serde_json's float parsing may differ in the last bit
        let diff = (&f.memberships(&x) - &g.memberships(&x)).mapv(f64::abs);
        assert!(diff.iter().all(|&v| v < 1e-12));
        assert_eq!(f.centres().dim(), g.centres().dim());
    }

    fn points() -> impl Strategy<Value = Array2<f64>> {
        (3usize..30, 1usize..5).prop_flat_map(|(n, d)| {
            proptest::collection::vec(-100.0f64..100.0, n * d)
                .prop_map(move |v| Array2::from_shape_vec((n, d), v).unwrap())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn memberships_are_probabilities(x in points(), k in 1usize..4, seed in any::<u64>()) {
            let f = FuzzyCMeansParams::new(k).seed(seed).check().unwrap().fit(&x).unwrap();
            let u = f.memberships(&x);
            prop_assert_eq!(u.dim(), (x.nrows(), k));
            for r in u.outer_iter() {
                prop_assert!(r.iter().all(|&v| (0.0..=1.0).contains(&v)));
                prop_assert!((r.sum() - 1.0).abs() < 1e-9);
            }
        }

        #[test]
        fn same_seed_same_result(x in points(), seed in any::<u64>()) {
            let p = FuzzyCMeansParams::new(2).seed(seed).check().unwrap();
            prop_assert_eq!(p.fit(&x).unwrap(), p.fit(&x).unwrap());
        }

        #[test]
        fn a_point_on_a_centre_belongs_to_it(x in points(), k in 1usize..4, m in 1.1f64..4.0) {
            let f = FuzzyCMeansParams::new(k).m(m).check().unwrap().fit(&x).unwrap();
            let c = f.centres().to_owned();
            let u = f.memberships(&c);
            for j in 0..k {
                // centres that coincide share the membership
                let twins = (0..k).filter(|&i| c.row(i) == c.row(j)).count();
                prop_assert!((u[[j, j]] - 1.0 / twins as f64).abs() < 1e-12);
            }
        }
    }
}
