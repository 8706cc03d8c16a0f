//! Graph augmentations for contrastive pretraining, on [`GraphFeatures`] (pure Rust, seeded):
//! node dropping (a dropped node leaves with its edges; its neighbours are not reconnected),
//! edge dropping, and feature masking (a whole numeric feature column zeroed in every node).
//! The first node (the network's input) and the last (its output) are never dropped, so a view
//! is never empty.

use crate::dataset::SplitMix64;
use crate::features::{GraphFeatures, NODE_DIM};
use serde::{Deserialize, Serialize};

/// Probabilities of each augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Probability of dropping each interior node.
    pub node_drop: f64,
    /// Probability of dropping each edge.
    pub edge_drop: f64,
    /// Probability of masking each numeric node-feature column.
    pub feature_mask: f64,
}

impl Default for AugmentConfig {
    fn default() -> AugmentConfig {
        AugmentConfig { node_drop: 0.1, edge_drop: 0.1, feature_mask: 0.2 }
    }
}

fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next() >> 11) as f64 / (1u64 << 53) as f64
}

/// One augmented view of `g`, drawn with `rng`.
pub fn augment(g: &GraphFeatures, cfg: &AugmentConfig, rng: &mut SplitMix64) -> GraphFeatures {
    let n = g.n_nodes;
    let keep: Vec<bool> =
        (0..n).map(|i| i == 0 || i + 1 == n || uniform(rng) >= cfg.node_drop).collect();
    let mut new_pos = vec![u32::MAX; n];
    let mut kept = 0u32;
    for (i, &k) in keep.iter().enumerate() {
        if k {
            new_pos[i] = kept;
            kept += 1;
        }
    }
    let masked: Vec<bool> = (0..NODE_DIM).map(|_| uniform(rng) < cfg.feature_mask).collect();
    let mut op = Vec::with_capacity(kept as usize);
    let mut node = Vec::with_capacity(kept as usize * NODE_DIM);
    for i in (0..n).filter(|&i| keep[i]) {
        op.push(g.op.get(i).copied().unwrap_or(0));
        for (c, &m) in masked.iter().enumerate() {
            let v = g.node.get(i * NODE_DIM + c).copied().unwrap_or(0.0);
            node.push(if m { 0.0 } else { v });
        }
    }
    let edges = g
        .edges
        .iter()
        .filter_map(|&(s, d)| {
            let (s, d) = (s as usize, d as usize);
            if s >= n || d >= n || !keep[s] || !keep[d] {
                return None;
            }
            let e = (new_pos[s], new_pos[d]);
            (uniform(rng) >= cfg.edge_drop).then_some(e)
        })
        .collect();
    GraphFeatures {
        n_nodes: kept as usize,
        op,
        node,
        edges,
        global: g.global.clone(),
        tokens: g.tokens.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn chain(n: usize) -> GraphFeatures {
        GraphFeatures {
            n_nodes: n,
            op: (0..n).map(|i| (i % 3) as i64 + 1).collect(),
            node: (0..n * NODE_DIM).map(|i| (i % 7) as f32 * 0.1 + 0.1).collect(),
            edges: (1..n).map(|i| ((i - 1) as u32, i as u32)).collect(),
            global: vec![0.5; crate::features::GLOBAL_DIM],
            tokens: vec![1, 2, 3],
        }
    }

    #[test]
    fn no_augmentation_is_identity() {
        let g = chain(12);
        let cfg = AugmentConfig { node_drop: 0.0, edge_drop: 0.0, feature_mask: 0.0 };
        assert_eq!(augment(&g, &cfg, &mut SplitMix64(1)), g);
    }

    #[test]
    fn same_seed_same_view() {
        let g = chain(40);
        let cfg = AugmentConfig { node_drop: 0.3, edge_drop: 0.3, feature_mask: 0.5 };
        let a = augment(&g, &cfg, &mut SplitMix64(9));
        let b = augment(&g, &cfg, &mut SplitMix64(9));
        assert_eq!(a, b);
        assert!(a.n_nodes < 40, "a 30% node drop on 38 droppable nodes kept all of them");
    }

    proptest! {
        #[test]
        fn views_are_consistent(n in 1usize..60, seed in any::<u64>(), p in 0.0f64..1.0) {
            let g = chain(n);
            let cfg = AugmentConfig { node_drop: p, edge_drop: p, feature_mask: p };
            let v = augment(&g, &cfg, &mut SplitMix64(seed));
            prop_assert!(v.n_nodes >= n.min(2) && v.n_nodes <= n);
            prop_assert_eq!(v.op.len(), v.n_nodes);
            prop_assert_eq!(v.node.len(), v.n_nodes * NODE_DIM);
            for &(s, d) in &v.edges {
                prop_assert!((s as usize) < v.n_nodes && (d as usize) < v.n_nodes);
            }
            prop_assert!(v.edges.len() <= g.edges.len());
        }
    }
}
