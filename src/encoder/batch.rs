//! Many graphs as one disjoint union, the form the GNN runs on: node positions are offset per
//! graph, every node carries the index of its graph, and graph-level features and token
//! sequences are stacked (tokens padded with 0; real tokens are shifted by one so 0 is never a
//! real token).

use crate::error::{Error, Result};
use crate::features::GraphFeatures;
use tch::{Device, Kind, Tensor};

use super::config::FeatureDims;

/// A batch of graphs as tensors on one device.
#[derive(Debug)]
pub struct Batch {
    /// Op vocabulary index per node, `[N]` i64.
    pub op: Tensor,
    /// Numeric node features, `[N, node_dim]` f32.
    pub x: Tensor,
    /// Edge sources (batch-wide node positions), `[E]` i64.
    pub src: Tensor,
    /// Edge destinations, `[E]` i64.
    pub dst: Tensor,
    /// Graph index of each node, `[N]` i64.
    pub graph: Tensor,
    /// One over each graph's node count (1 for an empty graph), `[B, 1]` f32.
    pub inv_count: Tensor,
    /// Graph-level features, `[B, global_dim]` f32.
    pub global: Tensor,
    /// Token ids + 1, 0-padded, `[B, L]` i64 (`L >= 1`).
    pub tokens: Tensor,
    /// 1 where `tokens` holds a real token, `[B, L]` f32.
    pub token_mask: Tensor,
    /// Number of graphs.
    pub n_graphs: usize,
    /// Number of nodes.
    pub n_nodes: usize,
}

fn bad(i: usize, msg: String) -> Error {
    Error::Model(format!("graph {i} of the batch: {msg}"))
}

/// Checks one graph's vectors against the model's dimensions.
pub fn check(i: usize, g: &GraphFeatures, dims: &FeatureDims) -> Result<()> {
    let n = g.n_nodes;
    if g.op.len() != n {
        return Err(bad(i, format!("{} op ids for {n} nodes", g.op.len())));
    }
    if g.node.len() != n * dims.node_dim {
        return Err(bad(
            i,
            format!("{} node features for {n} nodes of {} features", g.node.len(), dims.node_dim),
        ));
    }
    if g.global.len() != dims.global_dim {
        return Err(bad(
            i,
            format!("{} graph features, the model expects {}", g.global.len(), dims.global_dim),
        ));
    }
    if let Some(o) = g.op.iter().find(|&&o| o < 0 || o as usize >= dims.op_vocab) {
        return Err(bad(i, format!("op id {o} outside the vocabulary 0..{}", dims.op_vocab)));
    }
    if let Some(t) = g.tokens.iter().find(|&&t| t as usize >= dims.token_vocab) {
        return Err(bad(i, format!("token {t} outside the vocabulary 0..{}", dims.token_vocab)));
    }
    if let Some(e) = g.edges.iter().find(|&&(s, d)| s as usize >= n || d as usize >= n) {
        return Err(bad(i, format!("edge {e:?} leaves the graph's {n} nodes")));
    }
    if g.node.iter().chain(&g.global).any(|v| !v.is_finite()) {
        return Err(bad(i, "a feature is not finite".into()));
    }
    Ok(())
}

impl Batch {
    /// Stacks `graphs` into one batch on `device`, checking each against `dims`.
    pub fn new(graphs: &[&GraphFeatures], dims: &FeatureDims, device: Device) -> Result<Batch> {
        let b = graphs.len();
        let n_nodes: usize = graphs.iter().map(|g| g.n_nodes).sum();
        let n_edges: usize = graphs.iter().map(|g| g.edges.len()).sum();
        let max_tok = graphs.iter().map(|g| g.tokens.len()).max().unwrap_or(0).max(1);
        let mut op = Vec::with_capacity(n_nodes);
        let mut x = Vec::with_capacity(n_nodes * dims.node_dim);
        let (mut src, mut dst) = (Vec::with_capacity(n_edges), Vec::with_capacity(n_edges));
        let mut graph = Vec::with_capacity(n_nodes);
        let mut inv = Vec::with_capacity(b);
        let mut global = Vec::with_capacity(b * dims.global_dim);
        let mut tokens = vec![0i64; b * max_tok];
        let mut mask = vec![0f32; b * max_tok];
        let mut offset = 0i64;
        for (i, g) in graphs.iter().enumerate() {
            check(i, g, dims)?;
            op.extend_from_slice(&g.op);
            x.extend_from_slice(&g.node);
            for &(s, d) in &g.edges {
                src.push(offset + s as i64);
                dst.push(offset + d as i64);
            }
            graph.extend(std::iter::repeat_n(i as i64, g.n_nodes));
            inv.push(1.0 / g.n_nodes.max(1) as f32);
            global.extend_from_slice(&g.global);
            for (j, &t) in g.tokens.iter().enumerate() {
                tokens[i * max_tok + j] = t as i64 + 1;
                mask[i * max_tok + j] = 1.0;
            }
            offset += g.n_nodes as i64;
        }
        let to = |t: Tensor| t.to_device(device);
        Ok(Batch {
            op: to(Tensor::from_slice(&op)),
            x: to(Tensor::from_slice(&x).view([n_nodes as i64, dims.node_dim as i64])),
            src: to(Tensor::from_slice(&src)),
            dst: to(Tensor::from_slice(&dst)),
            graph: to(Tensor::from_slice(&graph)),
            inv_count: to(Tensor::from_slice(&inv).view([b as i64, 1])),
            global: to(Tensor::from_slice(&global).view([b as i64, dims.global_dim as i64])),
            tokens: to(Tensor::from_slice(&tokens).view([b as i64, max_tok as i64])),
            token_mask: to(Tensor::from_slice(&mask).view([b as i64, max_tok as i64])),
            n_graphs: b,
            n_nodes,
        })
    }

    /// Per-graph mean of node rows `h` (`[N, D]` -> `[B, D]`).
    pub fn mean_readout(&self, h: &Tensor) -> Tensor {
        let d = h.size()[1];
        let sum = Tensor::zeros([self.n_graphs as i64, d], (Kind::Float, h.device())).index_add(
            0,
            &self.graph,
            h,
        );
        sum * &self.inv_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{GLOBAL_DIM, NODE_DIM};

    fn g(n: usize, edges: Vec<(u32, u32)>, tokens: Vec<u32>) -> GraphFeatures {
        GraphFeatures {
            n_nodes: n,
            op: vec![1; n],
            node: (0..n * NODE_DIM).map(|i| i as f32).collect(),
            edges,
            global: vec![0.0; GLOBAL_DIM],
            tokens,
        }
    }

    #[test]
    fn disjoint_union_offsets_and_readout() {
        let a = g(3, vec![(0, 1), (1, 2)], vec![4, 5]);
        let b = g(2, vec![(0, 1)], vec![]);
        let dims = FeatureDims::current();
        let batch = Batch::new(&[&a, &b], &dims, Device::Cpu).unwrap();
        assert_eq!(batch.n_nodes, 5);
        assert_eq!(batch.x.size(), vec![5, NODE_DIM as i64]);
        assert_eq!(Vec::<i64>::try_from(&batch.src).unwrap(), vec![0, 1, 3]);
        assert_eq!(Vec::<i64>::try_from(&batch.dst).unwrap(), vec![1, 2, 4]);
        assert_eq!(Vec::<i64>::try_from(&batch.graph).unwrap(), vec![0, 0, 0, 1, 1]);
        assert_eq!(batch.tokens.size(), vec![2, 2]);
        assert_eq!(Vec::<i64>::try_from(&batch.tokens.view([-1])).unwrap(), vec![5, 6, 0, 0]);
        let h = Tensor::from_slice(&[1f32, 2., 3., 10., 20.]).view([5, 1]);
        let m = Vec::<f32>::try_from(&batch.mean_readout(&h).view([-1])).unwrap();
        assert_eq!(m, vec![2.0, 15.0]);
    }

    #[test]
    fn bad_graphs_are_errors() {
        let dims = FeatureDims::current();
        let mut a = g(2, vec![(0, 5)], vec![]);
        assert!(Batch::new(&[&a], &dims, Device::Cpu).is_err());
        a.edges.clear();
        a.op[0] = dims.op_vocab as i64;
        assert!(Batch::new(&[&a], &dims, Device::Cpu).is_err());
        a.op[0] = 0;
        a.global.pop();
        assert!(Batch::new(&[&a], &dims, Device::Cpu).is_err());
    }
}
