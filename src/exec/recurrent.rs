//! Recurrent layers (ONNX `LSTM`, `GRU`, `RNN`) for the executor, unrolled over the sequence
//! in the ONNX definitions' gate orders (LSTM: input, output, forget, cell; GRU: update, reset,
//! hidden), so autograd runs through them like any other op. The forms PyTorch writes are
//! covered: default activations, `layout` 0, no clip, no peepholes, no sequence lengths; any
//! other form is an error naming what is not supported, never a silently different network.

use super::ops::{arg, e, opt, R};
use crate::graph::OpNode;
use tch::Tensor;

/// The gates of each kind: their count, in the weight matrices' row order.
fn gates(op: &str) -> i64 {
    match op {
        "LSTM" => 4,
        "GRU" => 3,
        _ => 1,
    }
}

fn check_form(node: &OpNode, args: &[Option<Tensor>]) -> R<()> {
    let unsupported = [
        (node.attr_int("layout", 0) != 0, "layout 1 (batch first)"),
        (node.attr_float("clip", 0.0) != 0.0, "a clip"),
        (node.attr_int("input_forget", 0) != 0, "input_forget"),
        (
            node.attrs.values.contains_key("custom_activations"),
            "activations other than the defaults",
        ),
        (opt(args, 4).is_some(), "sequence lengths"),
        (opt(args, 7).is_some(), "peepholes"),
    ];
    match unsupported.iter().find(|(bad, _)| *bad) {
        Some((_, what)) => Err(format!("{} with {what} is not supported", node.onnx_op)),
        None => Ok(()),
    }
}

/// `Y [steps, directions, batch, hidden]`, `Y_h [directions, batch, hidden]` and, for LSTM,
/// `Y_c`.
pub(super) fn eval(node: &OpNode, args: &[Option<Tensor>]) -> R<Vec<Tensor>> {
    check_form(node, args)?;
    let (x, w, r) = (arg(args, 0)?, arg(args, 1)?, arg(args, 2)?);
    if [x, w, r].iter().any(|t| t.dim() != 3) {
        return Err(format!("{}: X, W and R must have rank 3", node.onnx_op));
    }
    let (dirs, rows) = (w.size()[0], w.size()[1]);
    if rows % gates(&node.onnx_op) != 0 {
        return Err(format!("{}: W's {rows} rows are not a whole number of gates", node.onnx_op));
    }
    let direction = node.attr_str("direction").unwrap_or("forward");
    if dirs != if direction == "bidirectional" { 2 } else { 1 } {
        return Err(format!(
            "{}: {dirs} directions of weights for direction '{direction}'",
            node.onnx_op
        ));
    }
    let (mut ys, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..dirs {
        let reverse = direction == "reverse" || (direction == "bidirectional" && d == 1);
        let (y, h, c) = Layer::of(node, args, d)?.run(x, args, d, reverse)?;
        ys.push(y);
        hs.push(h);
        cs.push(c);
    }
    let mut outs = vec![Tensor::f_stack(&ys, 1).map_err(e)?, Tensor::f_stack(&hs, 0).map_err(e)?];
    if node.onnx_op == "LSTM" {
        outs.push(Tensor::f_stack(&cs, 0).map_err(e)?);
    }
    Ok(outs)
}

/// One direction of one layer: weights transposed to `[input, rows]` and `[hidden, rows]`.
struct Layer<'a> {
    op: &'a str,
    w: Tensor,
    r: Tensor,
    wb: Option<Tensor>,
    rb: Option<Tensor>,
    linear_before_reset: bool,
}

fn plus(a: Tensor, b: &Option<Tensor>) -> R<Tensor> {
    match b {
        Some(b) => a.f_add(b).map_err(e),
        None => Ok(a),
    }
}

impl<'a> Layer<'a> {
    /// Direction `d` of the layer `node`, its biases split into W's and R's.
    fn of(node: &'a OpNode, args: &[Option<Tensor>], d: i64) -> R<Layer<'a>> {
        let (w, r) = (arg(args, 1)?, arg(args, 2)?);
        let rows = w.size()[1];
        let bias = opt(args, 3).map(|b| b.f_select(0, d)).transpose().map_err(e)?;
        let half = |start: i64| bias.as_ref().map(|b| b.f_narrow(0, start, rows)).transpose();
        Ok(Layer {
            op: node.onnx_op.as_str(),
            w: w.f_select(0, d).map_err(e)?.f_transpose(0, 1).map_err(e)?,
            r: r.f_select(0, d).map_err(e)?.f_transpose(0, 1).map_err(e)?,
            wb: half(0).map_err(e)?,
            rb: half(rows).map_err(e)?,
            linear_before_reset: node.attr_int("linear_before_reset", 0) != 0,
        })
    }

    /// The outputs of every step `[steps, batch, hidden]`, aligned with the input's steps, and
    /// the last state and cell, from the initial ones in `args` (zeros when absent).
    fn run(
        &self,
        x: &Tensor,
        args: &[Option<Tensor>],
        d: i64,
        reverse: bool,
    ) -> R<(Tensor, Tensor, Tensor)> {
        let hidden = self.r.size()[0];
        let start = |slot: usize| -> R<Tensor> {
            match opt(args, slot) {
                Some(t) => t.f_select(0, d).map_err(e),
                None => x.f_new_zeros([x.size()[1], hidden], (x.kind(), x.device())).map_err(e),
            }
        };
        let (mut h, mut c) = (start(5)?, start(6)?);
        let steps = x.size()[0];
        let mut out: Vec<Tensor> = Vec::with_capacity(steps as usize);
        let order: Vec<i64> =
            if reverse { (0..steps).rev().collect() } else { (0..steps).collect() };
        for t in order {
            (h, c) = self.step(&x.f_select(0, t).map_err(e)?, &h, &c)?;
            out.push(h.shallow_clone());
        }
        if reverse {
            out.reverse();
        }
        Ok((Tensor::f_stack(&out, 0).map_err(e)?, h, c))
    }

    /// The state after one step from `(h, c)` (`c` is LSTM's cell, carried unchanged by the
    /// others).
    fn step(&self, xt: &Tensor, h: &Tensor, c: &Tensor) -> R<(Tensor, Tensor)> {
        let xw = plus(xt.f_matmul(&self.w).map_err(e)?, &self.wb)?;
        let hr = plus(h.f_matmul(&self.r).map_err(e)?, &self.rb)?;
        match self.op {
            "LSTM" => {
                let g = xw.f_add(&hr).map_err(e)?.f_chunk(4, -1).map_err(e)?;
                let (i, o) = (g[0].f_sigmoid().map_err(e)?, g[1].f_sigmoid().map_err(e)?);
                let (f, cand) = (g[2].f_sigmoid().map_err(e)?, g[3].f_tanh().map_err(e)?);
                let c = f.f_mul(c).map_err(e)?.f_add(&i.f_mul(&cand).map_err(e)?).map_err(e)?;
                Ok((o.f_mul(&c.f_tanh().map_err(e)?).map_err(e)?, c))
            }
            "GRU" => Ok((self.gru(&xw, &hr, h)?, c.shallow_clone())),
            _ => Ok((xw.f_add(&hr).map_err(e)?.f_tanh().map_err(e)?, c.shallow_clone())),
        }
    }

    /// GRU: `z`, `r` from input and state; the candidate applies `r` after the state's product
    /// (`linear_before_reset`, as PyTorch writes it) or before it.
    fn gru(&self, xw: &Tensor, hr: &Tensor, h: &Tensor) -> R<Tensor> {
        let xg = xw.f_chunk(3, -1).map_err(e)?;
        let hg = hr.f_chunk(3, -1).map_err(e)?;
        let z = xg[0].f_add(&hg[0]).map_err(e)?.f_sigmoid().map_err(e)?;
        let reset = xg[1].f_add(&hg[1]).map_err(e)?.f_sigmoid().map_err(e)?;
        let state = if self.linear_before_reset {
            reset.f_mul(&hg[2]).map_err(e)?
        } else {
            let hidden = h.size()[1];
            let rh = self.r.f_narrow(1, 2 * hidden, hidden).map_err(e)?;
            let rb = self
                .rb
                .as_ref()
                .map(|b| b.f_narrow(0, 2 * hidden, hidden))
                .transpose()
                .map_err(e)?;
            plus(reset.f_mul(h).map_err(e)?.f_matmul(&rh).map_err(e)?, &rb)?
        };
        let cand = xg[2].f_add(&state).map_err(e)?.f_tanh().map_err(e)?;
        // (1 - z) * cand + z * h = cand + z * (h - cand)
        cand.f_add(&z.f_mul(&h.f_sub(&cand).map_err(e)?).map_err(e)?).map_err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AttrValue, OpKind};

    fn layer(op: &str, kind: OpKind, direction: &str, reset_first: bool) -> OpNode {
        let mut n = OpNode::new(kind, op);
        n.onnx_op = op.into();
        n.onnx_attrs.insert("direction".into(), AttrValue::Str(direction.into()));
        n.onnx_attrs.insert("linear_before_reset".into(), AttrValue::Int(i64::from(!reset_first)));
        n
    }

    /// A reverse layer is the forward layer run on the sequence reversed in time, its outputs
    /// aligned with the input's steps (the ONNX definition; onnxruntime agrees, tract does not).
    #[test]
    fn a_reverse_layer_is_the_forward_layer_on_the_reversed_sequence() {
        tch::manual_seed(0);
        let (steps, batch, input, hidden) = (5, 2, 3, 4);
        for (op, kind, gates) in
            [("LSTM", OpKind::Lstm, 4), ("GRU", OpKind::Gru, 3), ("RNN", OpKind::Rnn, 1)]
        {
            for reset_first in [false, true] {
                let x = Tensor::randn([steps, batch, input], tch::kind::FLOAT_CPU);
                let w = Tensor::randn([1, gates * hidden, input], tch::kind::FLOAT_CPU);
                let r = Tensor::randn([1, gates * hidden, hidden], tch::kind::FLOAT_CPU);
                let b = Tensor::randn([1, 2 * gates * hidden], tch::kind::FLOAT_CPU);
                let args = |x: &Tensor| {
                    vec![
                        Some(x.shallow_clone()),
                        Some(w.shallow_clone()),
                        Some(r.shallow_clone()),
                        Some(b.shallow_clone()),
                    ]
                };
                let rev =
                    eval(&layer(op, kind.clone(), "reverse", reset_first), &args(&x)).unwrap();
                let fwd =
                    eval(&layer(op, kind.clone(), "forward", reset_first), &args(&x.flip([0])))
                        .unwrap();
                let diff = f64::try_from((&rev[0] - fwd[0].flip([0])).abs().max()).unwrap();
                assert!(diff < 1e-6, "{op}: {diff}");
                // the last state of the reverse pass is its output at step 0
                let first = f64::try_from((&rev[1] - rev[0].select(0, 0)).abs().max()).unwrap();
                assert!(first < 1e-6, "{op}: {first}");
            }
        }
    }

    #[test]
    fn forms_pytorch_does_not_write_are_refused_by_name() {
        let mut n = layer("LSTM", OpKind::Lstm, "forward", false);
        n.onnx_attrs.insert("clip".into(), AttrValue::Float(3.0));
        let x = Tensor::zeros([2, 1, 3], tch::kind::FLOAT_CPU);
        let w = Tensor::zeros([1, 8, 3], tch::kind::FLOAT_CPU);
        let r = Tensor::zeros([1, 8, 2], tch::kind::FLOAT_CPU);
        let err = eval(&n, &[Some(x), Some(w), Some(r)]).unwrap_err();
        assert_eq!(err, "LSTM with a clip is not supported");
    }
}
