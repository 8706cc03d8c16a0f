//! Relative-position tables that an exporter stored gathered. Swin, MaxViT, CoAtNet, GCViT and
//! BEiT add to their attention scores a bias gathered from a learned table of
//! `(2W - 1)^2` relative offsets per head (BEiT adds 3 for its class token): `table[index]`.
//! PyTorch's TorchScript exporter folds that constant expression, so the file holds the
//! gathered `[heads, N, N]` tensor (`N = W^2`, or `W^2 + 1` with a class token) and not the
//! table: 2,401 values per head for a 7x7 window where the network learns 169. The dynamo
//! exporter keeps the Gather, and provenance then counts the table itself.
//!
//! nape counts such a tensor as the table it was gathered from, and says so in the graph's
//! notes ("undecided" in `inspect --json`): the file cannot prove where a bias came from, and a
//! network with a free `[heads, N, N]` attention bias of a square N would be undercounted.

/// The shape of a gathered relative-position bias, when `shape` is one: `[1.., heads, N, N]`
/// with `N` a square `W^2` (or `W^2 + 1`). Returns the size of the table it stands for.
pub(super) fn table_size(shape: &[usize]) -> Option<u64> {
    let r = shape.len();
    if r < 3 || shape[..r - 3].iter().any(|&d| d != 1) {
        return None;
    }
    let (heads, n) = (shape[r - 3] as u64, shape[r - 1] as u64);
    if shape[r - 2] as u64 != n || n < 4 {
        return None;
    }
    let square_side = |m: u64| Some(m.isqrt()).filter(|s| s * s == m);
    let rows = match (square_side(n), square_side(n - 1)) {
        (Some(w), _) => (2 * w - 1).pow(2),
        (None, Some(w)) => (2 * w - 1).pow(2) + 3,
        _ => return None,
    };
    Some(heads * rows)
}

/// The gathered tables of one file: how many, the values the file holds, what was counted.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    pub(super) tensors: usize,
    pub(super) in_file: u64,
    pub(super) counted: u64,
}

impl Gathered {
    /// The note for the graph, when there were any.
    pub(super) fn note(&self) -> Option<String> {
        (self.tensors > 0).then(|| {
            format!(
                "{} attention biases of [heads, N, N] are taken for relative-position tables the exporter gathered: counted as their tables, {} parameters, not the {} values the file holds",
                self.tensors, self.counted, self.in_file
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_biases_count_as_their_tables() {
        // Swin, 7x7 windows, 3 heads: 13 x 13 offsets per head
        assert_eq!(table_size(&[1, 3, 49, 49]), Some(3 * 169));
        assert_eq!(table_size(&[12, 196, 196]), Some(12 * 729));
        // BEiT at 384 px: 24 x 24 patches and a class token
        assert_eq!(table_size(&[1, 12, 577, 577]), Some(12 * (47 * 47 + 3)));
        // not a bias of square windows: left as the file holds it
        assert_eq!(table_size(&[1, 3, 50, 50]), Some(3 * (169 + 3)), "7 x 7 and a class token");
        assert_eq!(table_size(&[1, 3, 51, 51]), None);
        assert_eq!(table_size(&[1, 3, 49, 48]), None);
        assert_eq!(table_size(&[2, 3, 49, 49]), None, "a per-window tensor is not one table");
        assert_eq!(table_size(&[49, 49]), None);
    }
}
