//! Costs and attributes of the ops a detector's head is made of: selection (`NonZero`, `TopK`,
//! `NonMaxSuppression`), region pooling (`RoiAlign`) and `Loop` (see `docs/costs.md`).

use super::map::{attr_int, Dims, Mapped, NodeCtx};
use tract_onnx::pb;

/// Selection, region pooling and loops. `Ok(false)` when `ctx`'s op is not one of them.
pub(super) fn selection(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<bool, String> {
    let pn = ctx.pn;
    let Mapped { attrs, flops, .. } = m;
    match pn.op_type.as_str() {
        "NonZero" | "TopK" | "NonMaxSuppression" => {
            // one comparison per value read
            if let Some(a) = attr_int(pn, "axis") {
                attrs.axes = vec![a];
            }
            *flops = d.in_elems;
        }
        "RoiAlign" => {
            // every output value averages its sampling points, each 4 bilinear taps
            let ratio = attr_int(pn, "sampling_ratio").unwrap_or(0).max(1) as u64;
            attrs.kernel = [attr_int(pn, "output_height"), attr_int(pn, "output_width")]
                .iter()
                .map(|v| v.unwrap_or(1) as usize)
                .collect();
            *flops = d.out_elems * ratio * ratio * 4;
        }
        "Loop" => {
            // the body's data movement and elementwise work is not counted; matrix or
            // convolution work would be, so a body with any is refused rather than undercounted
            if let Some(op) = body_compute(pn) {
                return Err(format!(
                    "its body has {op} work, which nape does not count inside a loop"
                ));
            }
            *flops = 0;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The first matrix or convolution op in a node's subgraphs, at any depth.
fn body_compute(pn: &pb::NodeProto) -> Option<String> {
    let graphs = pn.attribute.iter().flat_map(|a| a.g.iter().chain(&a.graphs));
    graphs.flat_map(|g| &g.node).find_map(|n| {
        let macs = matches!(
            n.op_type.as_str(),
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul" | "Einsum" | "LSTM" | "GRU" | "RNN"
        );
        if macs {
            Some(n.op_type.clone())
        } else {
            body_compute(n)
        }
    })
}
