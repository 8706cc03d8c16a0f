//! The tract stage of reading a model: parse the protobuf with tract, bind the inputs, run
//! tract's shape analysis (a concrete shape, and where known a value, for every tensor), and
//! compute constants the analysis leaves without a value. tract panics on some malformed
//! models: [`guarded`] turns that into an error for the file.

use super::{HashMap, HashSet};
use crate::error::{Error, Result};
use crate::graph::{Cg, ConstValue, Shape};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceModelExt};

/// Runs tract on user input. tract can panic on malformed models (an `unwrap` deep in an op's
/// rules); such a panic becomes an `InvalidOnnx` error for this file instead of a crash
/// ([`crate::error::catch_panic`]). A panic on an allocation that failed (tract's "failed to
/// allocate", a large weight read while `nape proxies` runs capped in address space) says the
/// machine ran out of memory, not that the file is malformed.
pub(super) fn guarded<T>(source: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::error::catch_panic(f).unwrap_or_else(|first| {
        Err(if first.contains("failed to allocate") {
            let msg = format!("out of memory while reading the file (tract: {first})");
            Error::Run { path: source.into(), msg }
        } else {
            let msg = format!("the model is malformed (tract failed: {first})");
            Error::InvalidOnnx { path: source.into(), msg }
        })
    })
}

/// A constant's values as the executor keeps them (floats as f32, integers and booleans as i64),
/// `None` for one it cannot convert, or the allocation error when there is no memory for the
/// copy (a weight of hundreds of megabytes, read while `nape proxies` runs capped in address
/// space): the file's error then, where Rust would abort the whole run.
pub(super) fn const_value(t: &Tensor) -> std::result::Result<Option<ConstValue>, String> {
    fn copy<T: Copy>(
        view: tract_ndarray::ArrayViewD<'_, T>,
    ) -> std::result::Result<Vec<T>, String> {
        let mut v =
            crate::error::try_vec(view.len(), || format!("a constant of {} values", view.len()))?;
        v.extend(view.iter().copied());
        Ok(v)
    }
    if t.datum_type().is_float() {
        let Ok(c) = t.cast_to::<f32>() else { return Ok(None) };
        let Ok(view) = c.to_plain_array_view::<f32>() else { return Ok(None) };
        Ok(Some(ConstValue::Float(Arc::new(copy(view)?))))
    } else {
        let Ok(c) = t.cast_to::<i64>() else { return Ok(None) };
        let Ok(view) = c.to_plain_array_view::<i64>() else { return Ok(None) };
        Ok(Some(ConstValue::Int(Arc::new(copy(view)?))))
    }
}

/// A fact's shape when every dim of it is a known non-negative number.
pub(super) fn concrete_shape(f: &InferenceFact) -> Option<Shape> {
    let dims = f.shape.concretize()?;
    dims.iter().map(|d| d.to_i64().ok().and_then(|v| usize::try_from(v).ok())).collect()
}

/// The first line of a message (tract's errors can carry a backtrace).
pub(super) fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// What tract's analysis knows of one tensor.
#[derive(Debug, Clone, Default)]
pub(super) struct Fact {
    pub(super) shape: Option<Shape>,
    pub(super) datum_type: Option<DatumType>,
    pub(super) value: Option<Arc<Tensor>>,
}

/// Facts of every named tensor after one analysis.
pub(super) struct Facts {
    pub(super) table: HashMap<String, Fact>,
    /// Node outputs whose shape stayed unknown.
    pub(super) unknown: usize,
    /// The analysis error, if it stopped on one.
    pub(super) error: Option<String>,
}

impl Facts {
    pub(super) fn why(&self) -> String {
        match &self.error {
            Some(e) => format!(": {e}"),
            None => " (check the input shapes)".into(),
        }
    }
}

/// tract's analysis of the model. The file's value_info helps tract (Swin's exports need it)
/// but its symbolic dims can contradict the bound input shape: try with it, and without it
/// when that leaves tensors unknown.
pub(super) fn analyse_twice(
    model: &pb::ModelProto,
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) -> Result<Facts> {
    let facts = guarded(source, || analyse(model, false, bind, source))?;
    if facts.unknown == 0 {
        return Ok(facts);
    }
    tracing::debug!(
        "{source}: {} tensors without shape after the first analysis; retrying without value_info",
        facts.unknown
    );
    let second = guarded(source, || analyse(model, true, bind, source))?;
    Ok(if second.unknown < facts.unknown { second } else { facts })
}

/// Parses the model with tract, binds its inputs and runs the shape analysis.
pub(super) fn analyse(
    model: &pb::ModelProto,
    ignore_value_info: bool,
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) -> Result<Facts> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let onnx = super::tract_ops::parser()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(ignore_value_info);
    let parsed = onnx.parse(model, None).map_err(|e| invalid(one_line(&format!("{e:#}"))))?;
    let mut tm = parsed.model;
    let input_outlets: Vec<OutletId> =
        tm.input_outlets().map_err(|e| invalid(format!("{e:#}")))?.to_vec();
    for (ix, outlet) in input_outlets.iter().enumerate() {
        let name = tm.node(outlet.node).name.clone();
        let fact = bind(&name)?;
        tm.set_input_fact(ix, fact).map_err(|e| invalid(format!("{e:#}")))?;
    }
    let error = tm.analyse(true).err().map(|e| one_line(&format!("{e:#}")));
    let mut table =
        HashMap::with_capacity_and_hasher(parsed.outlets_by_name.len(), Default::default());
    let mut unknown = 0;
    let node_outputs: HashSet<&str> = model
        .graph
        .iter()
        .flat_map(|g| g.node.iter())
        .flat_map(|n| n.output.iter().map(|s| s.as_str()))
        .collect();
    for (name, outlet) in &parsed.outlets_by_name {
        let Ok(f) = tm.outlet_fact(*outlet) else { continue };
        let shape = concrete_shape(f);
        if shape.is_none() && node_outputs.contains(name.as_str()) {
            unknown += 1;
        }
        table.insert(
            name.clone(),
            Fact { shape, datum_type: f.datum_type.concretize(), value: f.concretize() },
        );
    }
    Ok(Facts { table, unknown, error })
}

/// Gives the operands named in `names` the values tract computes for them. tract's analysis
/// does not propagate values through every op (Swin's shifted-window attention masks are built
/// at export time by ScatterND chains on initializers), but it can run them: the graph is run
/// with those tensors as its outputs, on zero inputs, which they do not depend on. Where that
/// fails the operands stay without a value, and the executor says so when it needs one.
pub(super) fn fill_folded(
    cg: &mut Cg,
    model: &pb::ModelProto,
    names: &[String],
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) {
    // the file's value_info can contradict tract's rules (as in `analyse`): try without, then with
    let values = match guarded(source, || fold_constants(model, names, true, bind, source))
        .or_else(|_| guarded(source, || fold_constants(model, names, false, bind, source)))
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("{source}: constants {names:?} could not be computed: {e}");
            return;
        }
    };
    for n in cg.graph.node_weights_mut() {
        for op in n.operands.iter_mut().filter(|o| o.value.is_none()) {
            if let Some(v) = values.get(&op.name) {
                // a constant too large to copy now stays without a value, as one not computed
                op.value = const_value(v).ok().flatten();
            }
        }
    }
}

/// Runs tract on `model` with `names` as its outputs and zeros as its inputs.
pub(super) fn fold_constants(
    model: &pb::ModelProto,
    names: &[String],
    ignore_value_info: bool,
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) -> Result<HashMap<String, Arc<Tensor>>> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let tract_err = |e: TractError| invalid(one_line(&format!("{e:#}")));
    let mut proto = model.clone();
    let graph = proto.graph.as_mut().ok_or_else(|| invalid("no graph".into()))?;
    graph.output = names
        .iter()
        .map(|n| pb::ValueInfoProto { name: n.clone(), ..Default::default() })
        .collect();
    let onnx = super::tract_ops::parser()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(ignore_value_info);
    let mut tm = onnx.model_for_proto_model(&proto).map_err(tract_err)?;
    let outlets = tm.input_outlets().map_err(tract_err)?.to_vec();
    let mut inputs = TVec::new();
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = tm.node(outlet.node).name.clone();
        let fact = bind(&name)?;
        let dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
        let shape = concrete_shape(&fact)
            .ok_or_else(|| invalid(format!("input '{name}' has no concrete shape")))?;
        tm.set_input_fact(ix, fact).map_err(tract_err)?;
        inputs.push(Tensor::zero_dt(dt, &shape).map_err(tract_err)?.into_tvalue());
    }
    let outs = tm
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .and_then(|r| r.run(inputs))
        .map_err(tract_err)?;
    Ok(names.iter().cloned().zip(outs.into_iter().map(|t| t.into_arc_tensor())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_allocation_in_tract_is_out_of_memory_not_a_malformed_file() {
        let oom = || panic!("failed to allocate Layout {{ size: 8433216, align: 64 (1 << 6) }}");
        let e = guarded::<()>("big.onnx", oom).unwrap_err();
        assert!(matches!(e, Error::Run { .. }) && e.to_string().contains("out of memory"), "{e}");
        let e = guarded::<()>("bad.onnx", || panic!("called `Option::unwrap()` on a `None` value"));
        let e = e.unwrap_err();
        assert!(matches!(e, Error::InvalidOnnx { .. }) && e.to_string().contains("malformed"));
    }
}
