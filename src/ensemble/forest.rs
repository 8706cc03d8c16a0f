//! The tree baseline: a random forest regressor (Breiman 2001; bootstrap rows, a random subset
//! of columns tried at each split, variance-reduction splits, averaged trees), fitted on the
//! GRAF-style features of [`crate::features::graf`]. GRAF (Kadlecová et al., ICML 2024) shows
//! such a forest on plain graph counts is a strong few-shot predictor; a learned predictor that
//! loses to it should be seen losing. Pure Rust, deterministic given the seed.

use crate::dataset::SplitMix64;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Parameters of the forest, before validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    /// Trees.
    pub trees: usize,
    /// Fewest rows in a leaf.
    pub min_leaf: usize,
    /// Deepest split.
    pub max_depth: usize,
    /// Fraction of the columns tried at each split (regression default: 1/3).
    pub max_features: f64,
    /// Seed of the bootstrap and column draws.
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams { trees: 200, min_leaf: 2, max_depth: 16, max_features: 1.0 / 3.0, seed: 0 }
    }
}

/// Parameters that passed [`ForestParams::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct ForestValidParams(ForestParams);

impl ForestParams {
    /// Validates: trees, min_leaf and max_depth >= 1, 0 < max_features <= 1.
    pub fn check(self) -> Result<ForestValidParams> {
        let ok = self.trees >= 1
            && self.min_leaf >= 1
            && self.max_depth >= 1
            && self.max_features > 0.0
            && self.max_features <= 1.0;
        if !ok {
            return Err(Error::Fit { what: "random forest".into(), msg: format!("{self:?}") });
        }
        Ok(ForestValidParams(self))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Node {
    Leaf(f64),
    Split { col: usize, at: f64, left: usize, right: usize },
}

/// A fitted forest: plain numbers, predicts without any state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    trees: Vec<Vec<Node>>,
    cols: usize,
}

impl ForestValidParams {
    /// Fits the forest on rows `x` (each of the same length) and targets `y`.
    pub fn fit(&self, x: &[Vec<f64>], y: &[f64]) -> Result<Forest> {
        let p = &self.0;
        let cols = x.first().map_or(0, Vec::len);
        let bad = |msg: String| Error::Fit { what: "random forest".into(), msg };
        if x.len() != y.len() || x.len() < 2 || x.iter().any(|r| r.len() != cols) {
            return Err(bad(format!("{} rows of unequal width for {} targets", x.len(), y.len())));
        }
        if y.iter().chain(x.iter().flatten()).any(|v| !v.is_finite()) {
            return Err(bad("a value is not finite".into()));
        }
        let mtry = ((cols as f64 * p.max_features).ceil() as usize).clamp(1, cols.max(1));
        let mut rng = SplitMix64(p.seed ^ 0xF0_7E57);
        let trees = (0..p.trees)
            .map(|_| {
                let rows: Vec<usize> =
                    (0..x.len()).map(|_| (rng.next() % x.len() as u64) as usize).collect();
                let mut b = Builder { x, y, p, mtry, rng: SplitMix64(rng.next()), nodes: vec![] };
                b.grow(rows, 0);
                b.nodes
            })
            .collect();
        Ok(Forest { trees, cols })
    }
}

struct Builder<'a> {
    x: &'a [Vec<f64>],
    y: &'a [f64],
    p: &'a ForestParams,
    mtry: usize,
    rng: SplitMix64,
    nodes: Vec<Node>,
}

impl Builder<'_> {
    /// Grows the subtree of `rows` and returns its node index.
    fn grow(&mut self, rows: Vec<usize>, depth: usize) -> usize {
        let mean = rows.iter().map(|&r| self.y[r]).sum::<f64>() / rows.len() as f64;
        let at = self.nodes.len();
        self.nodes.push(Node::Leaf(mean));
        if depth >= self.p.max_depth || rows.len() < 2 * self.p.min_leaf {
            return at;
        }
        let Some((col, thr)) = self.best_split(&rows) else { return at };
        let (l, r): (Vec<usize>, Vec<usize>) = rows.iter().partition(|&&i| self.x[i][col] <= thr);
        let left = self.grow(l, depth + 1);
        let right = self.grow(r, depth + 1);
        self.nodes[at] = Node::Split { col, at: thr, left, right };
        at
    }

    /// The split of most variance reduction among `mtry` random columns, if any separates.
    fn best_split(&mut self, rows: &[usize]) -> Option<(usize, f64)> {
        let cols = self.x[0].len();
        let mut order: Vec<usize> = (0..cols).collect();
        self.rng.shuffle_prefix(&mut order, self.mtry);
        let total: f64 = rows.iter().map(|&r| self.y[r]).sum();
        let n = rows.len() as f64;
        let mut best: Option<(f64, usize, f64)> = None;
        let mut sorted = rows.to_vec();
        for &c in &order[..self.mtry] {
            sorted.sort_by(|&a, &b| self.x[a][c].total_cmp(&self.x[b][c]));
            let mut left = 0.0;
            for k in 0..sorted.len() - 1 {
                left += self.y[sorted[k]];
                let (v, next) = (self.x[sorted[k]][c], self.x[sorted[k + 1]][c]);
                let nl = (k + 1) as f64;
                if v == next || k + 1 < self.p.min_leaf || sorted.len() - k - 1 < self.p.min_leaf {
                    continue;
                }
                // maximising sum_l^2/n_l + sum_r^2/n_r minimises the children's squared error
                let gain = left * left / nl + (total - left).powi(2) / (n - nl);
                if best.is_none_or(|b| gain > b.0 + 1e-12) {
                    best = Some((gain, c, 0.5 * (v + next)));
                }
            }
        }
        best.filter(|b| b.0 > total * total / n + 1e-12).map(|b| (b.1, b.2))
    }
}

impl Forest {
    /// The mean of the trees' predictions for each row of `x`.
    pub fn predict(&self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        x.iter()
            .map(|row| {
                if row.len() != self.cols {
                    return Err(Error::Fit {
                        what: "random forest".into(),
                        msg: format!(
                            "a row of {} columns for a forest of {}",
                            row.len(),
                            self.cols
                        ),
                    });
                }
                let sum: f64 = self.trees.iter().map(|t| leaf(t, row)).sum();
                Ok(sum / self.trees.len() as f64)
            })
            .collect()
    }
}

fn leaf(tree: &[Node], row: &[f64]) -> f64 {
    let mut i = 0;
    loop {
        match tree[i] {
            Node::Leaf(v) => return v,
            Node::Split { col, at, left, right } => i = if row[col] <= at { left } else { right },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_step_and_ignores_noise_columns() {
        let mut rng = SplitMix64(3);
        let mut u = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let x: Vec<Vec<f64>> = (0..200).map(|_| vec![u(), u(), u()]).collect();
        let y: Vec<f64> = x.iter().map(|r| if r[1] > 0.5 { 10.0 } else { 0.0 } + r[2]).collect();
        let f =
            ForestParams { seed: 1, ..Default::default() }.check().unwrap().fit(&x, &y).unwrap();
        let test = vec![vec![0.9, 0.2, 0.5], vec![0.1, 0.8, 0.5]];
        let p = f.predict(&test).unwrap();
        assert!((p[0] - 0.5).abs() < 1.0 && (p[1] - 10.5).abs() < 1.0, "{p:?}");
        let again =
            ForestParams { seed: 1, ..Default::default() }.check().unwrap().fit(&x, &y).unwrap();
        assert_eq!(f, again, "deterministic given the seed");
        assert!(f.predict(&[vec![1.0]]).is_err());
    }

    #[test]
    fn refuses_bad_parameters_and_data() {
        assert!(ForestParams { trees: 0, ..Default::default() }.check().is_err());
        assert!(ForestParams { max_features: 1.5, ..Default::default() }.check().is_err());
        let p = ForestParams::default().check().unwrap();
        assert!(p.fit(&[vec![1.0], vec![f64::NAN]], &[1.0, 2.0]).is_err());
        assert!(p.fit(&[vec![1.0]], &[1.0]).is_err());
        // a constant target gives a single leaf
        let f = p.fit(&[vec![1.0], vec![2.0], vec![3.0], vec![4.0]], &[5.0; 4]).unwrap();
        assert_eq!(f.predict(&[vec![9.0]]).unwrap(), [5.0]);
    }
}
