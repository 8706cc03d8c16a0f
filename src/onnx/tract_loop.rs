//! The shape rule of ONNX `Loop` for nape's analysis (tract's parser has none). The body is
//! analysed with the facts of the loop's inputs: a carried value that keeps its shape keeps it;
//! one that grows by the same step in the first two iterations (a list appended to, as
//! TorchScript writes `torch.cat((res, x))` in a loop) grows by it every iteration; a scan
//! output stacks the body's result once per iteration. The trip count is `M`'s value; the
//! condition can end the loop earlier, so the result is an upper bound
//! ([`super::bounded::SOURCES`] holds `Loop`). tract cannot run it.

use tract_onnx::model::{ParseResult, ParsingContext};
use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceOp};
use tract_onnx::tract_hir::internal::*;

/// Parses a `Loop` node: its body, and which optional inputs it lists.
pub(super) fn parse(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let body: &GraphProto = node.get_attr("body")?;
    let ParseResult { model, unresolved_inputs, .. } = ctx.parse_graph(body)?;
    let listed = |i: usize| node.input.get(i).is_some_and(|s| !s.is_empty());
    let op = Loop {
        body: model,
        has_trips: listed(0),
        has_cond: listed(1),
        carried: node.input.len().saturating_sub(2),
        scans: node.output.len().saturating_sub(node.input.len().saturating_sub(2)),
    };
    Ok((Box::new(op), unresolved_inputs))
}

#[derive(Debug, Clone)]
struct Loop {
    body: InferenceModel,
    has_trips: bool,
    has_cond: bool,
    carried: usize,
    scans: usize,
}

impl PartialEq for Loop {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}
impl Eq for Loop {}

impl Op for Loop {
    fn name(&self) -> StaticName {
        "Loop".into()
    }

    not_a_typed_op!();
}

impl EvalOp for Loop {
    not_out_of_plan!();
}

/// A fact's concrete shape, as signed numbers (a shape's step per iteration can be negative).
fn dims(f: &InferenceFact) -> Option<Vec<i64>> {
    Some(super::analyse::concrete_shape(f)?.iter().map(|&d| d as i64).collect())
}

impl Loop {
    /// The body's output facts after one iteration from carried shapes `carried`, with the
    /// loop's other inputs (`outer`: what the body reads of the enclosing graph) as they are.
    fn step(
        &self,
        carried: &[(DatumType, Vec<i64>)],
        outer: &[InferenceFact],
    ) -> TractResult<Vec<InferenceFact>> {
        let mut body = self.body.clone();
        body.set_input_fact(0, InferenceFact::dt_shape(i64::datum_type(), TVec::<TDim>::new()))?;
        body.set_input_fact(1, InferenceFact::dt_shape(bool::datum_type(), TVec::<TDim>::new()))?;
        for (j, (dt, shape)) in carried.iter().enumerate() {
            body.set_input_fact(
                2 + j,
                InferenceFact::dt_shape(
                    *dt,
                    shape.iter().map(|&d| d.to_dim()).collect::<TVec<_>>(),
                ),
            )?;
        }
        for (k, f) in outer.iter().enumerate() {
            body.set_input_fact(2 + carried.len() + k, f.clone())?;
        }
        body.analyse(false)?;
        (0..body.output_outlets()?.len()).map(|ix| Ok(body.output_fact(ix)?.clone())).collect()
    }

    /// The output facts, once the trip count and the carried shapes are known.
    fn outputs(&self, inputs: &[InferenceFact]) -> TractResult<Option<Vec<InferenceFact>>> {
        let skip = self.has_trips as usize + self.has_cond as usize;
        if inputs.len() < skip + self.carried {
            bail!("Loop lists {} carried values but has {} inputs", self.carried, inputs.len());
        }
        let trips = match self.has_trips.then(|| inputs[0].value.concretize()).flatten() {
            Some(t) => t.cast_to_scalar::<i64>()?,
            None => return Ok(None),
        };
        let start: Option<Vec<(DatumType, Vec<i64>)>> = inputs[skip..skip + self.carried]
            .iter()
            .map(|f| Some((f.datum_type.concretize()?, dims(f)?)))
            .collect();
        let Some(start) = start else { return Ok(None) };
        let outer = &inputs[skip + self.carried..];
        let first = self.step(&start, outer)?;
        if first.len() != 1 + self.carried + self.scans {
            bail!(
                "the body has {} results, the loop {} outputs",
                first.len().saturating_sub(1),
                self.carried + self.scans
            );
        }
        let after_one: Option<Vec<Vec<i64>>> = first[1..=self.carried].iter().map(dims).collect();
        let Some(after_one) = after_one else {
            bail!("the body's carried results have no known shape")
        };
        let mut out = Vec::with_capacity(self.carried + self.scans);
        let moved: Vec<(DatumType, Vec<i64>)> =
            start.iter().zip(&after_one).map(|((dt, _), s)| (*dt, s.clone())).collect();
        let second = if start.iter().zip(&after_one).any(|((_, a), b)| a != b) {
            Some(self.step(&moved, outer)?)
        } else {
            None
        };
        for (j, ((dt, s0), s1)) in start.iter().zip(&after_one).enumerate() {
            let s2 = match &second {
                Some(f) => dims(&f[1 + j]).unwrap_or_default(),
                None => s1.clone(),
            };
            let steps: Vec<i64> = s1.iter().zip(s0).map(|(b, a)| b - a).collect();
            let again: Vec<i64> = s2.iter().zip(s1).map(|(c, b)| c - b).collect();
            if s0.len() != s1.len() || s1.len() != s2.len() || steps != again {
                bail!("carried value {j} changes shape irregularly ({s0:?}, {s1:?}, {s2:?})");
            }
            let last: TVec<TDim> =
                s0.iter().zip(&steps).map(|(a, d)| (a + trips * d).to_dim()).collect();
            out.push(InferenceFact::dt_shape(*dt, last));
        }
        for f in &first[1 + self.carried..] {
            let (Some(dt), Some(s)) = (f.datum_type.concretize(), dims(f)) else {
                bail!("the body's scan results have no known shape");
            };
            let stacked: TVec<TDim> =
                std::iter::once(trips.to_dim()).chain(s.iter().map(|d| d.to_dim())).collect();
            out.push(InferenceFact::dt_shape(dt, stacked));
        }
        Ok(Some(out))
    }
}

impl InferenceOp for Loop {
    fn infer_facts(
        &mut self,
        inputs: TVec<&InferenceFact>,
        outputs: TVec<&InferenceFact>,
        observed: TVec<&InferenceFact>,
    ) -> TractResult<(TVec<InferenceFact>, TVec<InferenceFact>, TVec<InferenceFact>)> {
        let inputs: TVec<InferenceFact> = inputs.into_iter().cloned().collect();
        let mut outputs: TVec<InferenceFact> = outputs.into_iter().cloned().collect();
        if let Some(facts) = self.outputs(&inputs)? {
            for (o, f) in outputs.iter_mut().zip(facts) {
                o.unify_with(&f)?;
            }
        }
        Ok((inputs, outputs, observed.into_iter().cloned().collect()))
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.carried + self.scans)
    }

    as_op!();
}
