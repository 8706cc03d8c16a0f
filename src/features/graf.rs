//! GRAF-style graph features (Kadlecová et al., "Surprisingly strong performance prediction
//! with neural graph features", ICML 2024), generalised from cells to any CG: what the random
//! forest baseline reads. All are plain counts over the encoded graph (nodes in topological
//! order, data-flow edges), so they apply to any network nape reads:
//!
//! - per op index of the vocabulary: how many nodes have it;
//! - per op index: the most and the fewest nodes of that op on any path from an input (a node
//!   without in-edges) to an output (a node without out-edges), GRAF's "max/min path length
//!   over an op subset" with one op per subset;
//! - the longest and shortest input-to-output path, in nodes;
//! - degrees: edges per node, max in- and out-degree, merge nodes (in-degree > 1) and branch
//!   nodes (out-degree > 1);
//! - log10(1 + parameters) and log10(1 + FLOPs), read from the graph-level features.

use super::{GraphFeatures, OP_VOCAB};

/// Number of GRAF-style features: three per op index, two path lengths, five degree
/// statistics, log params and log FLOPs.
pub const GRAF_DIM: usize = 3 * OP_VOCAB + 2 + 5 + 2;

/// The GRAF-style features of one encoded graph, [`GRAF_DIM`] of them.
pub fn graf_features(g: &GraphFeatures) -> Vec<f64> {
    let n = g.n_nodes.min(g.op.len());
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let (mut indeg, mut outdeg) = (vec![0usize; n], vec![0usize; n]);
    for &(s, d) in &g.edges {
        let (s, d) = (s as usize, d as usize);
        if s < n && d < n && s < d {
            preds[d].push(s);
            indeg[d] += 1;
            outdeg[s] += 1;
        }
    }
    let mut f = vec![0.0; GRAF_DIM];
    for &o in &g.op[..n] {
        f[op_slot(o)] += 1.0;
    }
    // per op (and, in the last slot, over all nodes): most and fewest on a source-to-sink path
    let kinds: Vec<usize> = {
        let mut k: Vec<usize> = g.op[..n].iter().map(|&o| op_slot(o)).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let count = |pick: &dyn Fn(usize) -> bool| path_extremes(n, &preds, &outdeg, pick);
    for &k in &kinds {
        let (most, fewest) = count(&|i| op_slot(g.op[i]) == k);
        f[OP_VOCAB + k] = most;
        f[2 * OP_VOCAB + k] = fewest;
    }
    let (longest, shortest) = count(&|_| true);
    let b = 3 * OP_VOCAB;
    f[b] = longest;
    f[b + 1] = shortest;
    let nf = n.max(1) as f64;
    f[b + 2] = g.edges.len() as f64 / nf;
    f[b + 3] = indeg.iter().copied().max().unwrap_or(0) as f64;
    f[b + 4] = outdeg.iter().copied().max().unwrap_or(0) as f64;
    f[b + 5] = indeg.iter().filter(|&&d| d > 1).count() as f64;
    f[b + 6] = outdeg.iter().filter(|&&d| d > 1).count() as f64;
    f[b + 7] = log10_params(g);
    f[b + 8] = super::log_flops(g);
    f
}

fn op_slot(o: i64) -> usize {
    usize::try_from(o).ok().filter(|&o| o < OP_VOCAB).unwrap_or(0)
}

/// log10(1 + parameters), undoing the graph-level feature's scaling (see the module docs of
/// `features`: the first scalar is log10(1 + params) / 8).
pub fn log10_params(g: &GraphFeatures) -> f64 {
    g.global.first().map_or(0.0, |&v| f64::from(v) * 8.0)
}

/// The most and the fewest `pick`ed nodes on any path from a source to a sink (nodes in
/// topological order; `preds` per node).
fn path_extremes(
    n: usize,
    preds: &[Vec<usize>],
    outdeg: &[usize],
    pick: &dyn Fn(usize) -> bool,
) -> (f64, f64) {
    let (mut most, mut fewest) = (vec![0usize; n], vec![0usize; n]);
    for i in 0..n {
        let own = usize::from(pick(i));
        let (hi, lo) =
            preds[i].iter().fold((None, None), |(hi, lo): (Option<usize>, Option<usize>), &p| {
                (
                    Some(hi.map_or(most[p], |h| h.max(most[p]))),
                    Some(lo.map_or(fewest[p], |l| l.min(fewest[p]))),
                )
            });
        most[i] = hi.unwrap_or(0) + own;
        fewest[i] = lo.unwrap_or(0) + own;
    }
    let sinks = (0..n).filter(|&i| outdeg[i] == 0);
    let (hi, lo) = sinks.fold((0, usize::MAX), |(h, l), i| (h.max(most[i]), l.min(fewest[i])));
    (hi as f64, if lo == usize::MAX { 0.0 } else { lo as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(ops: &[i64], edges: &[(u32, u32)]) -> GraphFeatures {
        GraphFeatures {
            n_nodes: ops.len(),
            op: ops.to_vec(),
            node: vec![0.0; ops.len() * super::super::NODE_DIM],
            edges: edges.to_vec(),
            global: vec![0.5; super::super::GLOBAL_DIM],
            tokens: Vec::new(),
        }
    }

    #[test]
    fn counts_ops_paths_and_degrees_of_a_diamond() {
        // 0 -> 1 (op 3) -> 2 (op 3) -> 4 ; 0 -> 3 (op 5) -> 4: two paths to the sink
        let g = graph(&[1, 3, 3, 5, 2], &[(0, 1), (1, 2), (2, 4), (0, 3), (3, 4)]);
        let f = graf_features(&g);
        assert_eq!(f.len(), GRAF_DIM);
        assert_eq!((f[3], f[5], f[1], f[7]), (2.0, 1.0, 1.0, 0.0));
        assert_eq!(
            (f[OP_VOCAB + 3], f[2 * OP_VOCAB + 3]),
            (2.0, 0.0),
            "op 3: 2 on one path, 0 on the other"
        );
        assert_eq!((f[OP_VOCAB + 5], f[2 * OP_VOCAB + 5]), (1.0, 0.0));
        let b = 3 * OP_VOCAB;
        assert_eq!((f[b], f[b + 1]), (4.0, 3.0), "longest and shortest paths in nodes");
        assert_eq!((f[b + 3], f[b + 4], f[b + 5], f[b + 6]), (2.0, 2.0, 1.0, 1.0));
        assert!((f[b + 7] - 4.0).abs() < 1e-6, "log params from the scaled global feature");
    }
}
