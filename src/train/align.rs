//! Per-family feature alignment (transductive, for ranking a whole family): each numeric node
//! feature column and each graph-level feature column of a new family's graphs is standardised
//! with that family's own mean and std, then mapped onto the training family's mean and std.
//! Absolute sizes (NB-201's 0.1-1.5 M parameters against NB-101's 0.2-50 M) become sizes
//! relative to the family, which is what a ranking within the family needs. A column constant
//! in the new family is set to the training mean.

use crate::features::GraphFeatures;
use serde::{Deserialize, Serialize};

/// Column means and standard deviations of node and graph-level features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Mean of each node-feature column over all nodes.
    pub node_mean: Vec<f64>,
    /// Std of each node-feature column.
    pub node_std: Vec<f64>,
    /// Mean of each graph-level column over all graphs.
    pub global_mean: Vec<f64>,
    /// Std of each graph-level column.
    pub global_std: Vec<f64>,
}

fn moments(rows: &mut dyn Iterator<Item = &[f32]>, dim: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut s2, mut n) = (vec![0.0; dim], vec![0.0; dim], 0usize);
    for r in rows {
        for (c, &v) in r.iter().enumerate().take(dim) {
            s[c] += v as f64;
            s2[c] += (v as f64) * (v as f64);
        }
        n += 1;
    }
    let n = n.max(1) as f64;
    let mean: Vec<f64> = s.iter().map(|x| x / n).collect();
    let std = s2.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0).sqrt()).collect();
    (mean, std)
}

impl FeatureStats {
    /// Statistics of `graphs` (node features of dimension `node_dim`).
    pub fn of(graphs: &[&GraphFeatures], node_dim: usize) -> FeatureStats {
        let gdim = graphs.first().map(|g| g.global.len()).unwrap_or(0);
        let (node_mean, node_std) =
            moments(&mut graphs.iter().flat_map(|g| g.node.chunks(node_dim.max(1))), node_dim);
        let (global_mean, global_std) =
            moments(&mut graphs.iter().map(|g| g.global.as_slice()), gdim);
        FeatureStats { node_mean, node_std, global_mean, global_std }
    }
}

fn map(v: f32, c: usize, from_m: &[f64], from_s: &[f64], to_m: &[f64], to_s: &[f64]) -> f32 {
    let (Some(&fm), Some(&fs), Some(&tm), Some(&ts)) =
        (from_m.get(c), from_s.get(c), to_m.get(c), to_s.get(c))
    else {
        return v;
    };
    if fs < 1e-9 {
        return tm as f32;
    }
    (((v as f64 - fm) / fs) * ts + tm) as f32
}

/// Aligns `graphs` (one family) onto the training statistics `to`.
pub fn align(graphs: &mut [GraphFeatures], to: &FeatureStats, node_dim: usize) {
    let refs: Vec<&GraphFeatures> = graphs.iter().collect();
    let from = FeatureStats::of(&refs, node_dim);
    for g in graphs.iter_mut() {
        for row in g.node.chunks_mut(node_dim.max(1)) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = map(*v, c, &from.node_mean, &from.node_std, &to.node_mean, &to.node_std);
            }
        }
        for (c, v) in g.global.iter_mut().enumerate() {
            *v = map(*v, c, &from.global_mean, &from.global_std, &to.global_mean, &to.global_std);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(node: Vec<f32>, global: Vec<f32>) -> GraphFeatures {
        GraphFeatures {
            n_nodes: node.len() / 2,
            op: vec![1; node.len() / 2],
            node,
            edges: vec![],
            global,
            tokens: vec![],
        }
    }

    #[test]
    fn aligned_columns_take_the_training_moments() {
        let train =
            [g(vec![0.0, 1.0, 2.0, 1.0], vec![10.0, 5.0]), g(vec![4.0, 1.0], vec![20.0, 5.0])];
        let to = FeatureStats::of(&train.iter().collect::<Vec<_>>(), 2);
        let mut new = vec![
            g(vec![100.0, 7.0, 300.0, 7.0], vec![1.0, 3.0]),
            g(vec![200.0, 7.0], vec![3.0, 4.0]),
        ];
        align(&mut new, &to, 2);
        let after = FeatureStats::of(&new.iter().collect::<Vec<_>>(), 2);
        for (a, b) in after.node_mean.iter().zip(&to.node_mean) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!((after.node_std[0] - to.node_std[0]).abs() < 1e-5);
        assert!((after.global_mean[0] - to.global_mean[0]).abs() < 1e-5);
        // order within the family is kept
        assert!(new[0].global[0] < new[1].global[0]);
    }
}
