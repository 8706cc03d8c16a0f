//! The warning about convolutions that still seem to hold folded BatchNorms after `nape
//! proxies` put back those the exporter's names mark (docs/proxies.md, "Eval-mode exports").

use crate::graph::Cg;

/// The files whose convolutions still seem to hold folded BatchNorms after `--folded-bn
/// restore` (their biases' names say nothing; `Cg::folded_convs` with `guess`): how many, and
/// the first, for one warning at the end.
#[derive(Default)]
pub(super) struct Folded(std::sync::Mutex<(usize, Option<FirstFolded>)>);

/// A file's id, its convolutions that seem folded, and all its convolutions.
type FirstFolded = (String, usize, usize);

impl Folded {
    pub(super) fn saw(&self, cg: &Cg, id: &str) {
        let folded = cg.folded_convs(true).len();
        if folded == 0 {
            return;
        }
        let convs = cg.graph.node_weights().filter(|n| n.onnx_op == "Conv").count();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.0 += 1;
        seen.1.get_or_insert((id.to_string(), folded, convs));
    }

    pub(super) fn warn(&self) {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let (n, Some((first, folded, convs))) = &*seen {
            tracing::warn!(
                "{n} file(s) have convolutions whose bias may be a BatchNorm an eval-mode export \
                 folded into them, but whose names do not say so (the first: {first}, {folded} \
                 of its {convs} convolutions); they were scored without BatchNorm there: \
                 --folded-bn guess puts one back (docs/proxies.md, \"Eval-mode exports\")"
            );
        }
    }
}
