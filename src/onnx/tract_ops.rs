//! Shape rules for ONNX ops tract's parser does not know, registered on the parser nape's
//! analysis uses, so the analysis flows through them (PyTorch's `fold` exports as `Col2Im`;
//! its interpolation, up to opset 9, as `Upsample`).
//! tract cannot run them: typing one is an error naming it (nape's executor runs them).

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// The `wire` of an op whose shapes tract's analysis reads and which only nape's executor runs:
/// typing it is an error naming the op.
macro_rules! run_by_nape_only {
    ($op:literal) => {
        fn wire(
            &self,
            prefix: &str,
            _: &mut TypedModel,
            _: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            bail!("{prefix}: tract cannot run {} (nape's executor can)", $op)
        }
    };
}

/// tract's ONNX parser with nape's extra shape rules.
pub(super) fn parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    register(&mut onnx.op_register);
    onnx
}

fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Col2Im", |_: &ParsingContext, _: &NodeProto| Ok((expand(Col2Im), vec![])));
    reg.insert("Size", |_: &ParsingContext, _: &NodeProto| Ok((expand(Size), vec![])));
    reg.insert("Upsample", |_: &ParsingContext, node: &NodeProto| {
        let scales = node.get_attr_opt_vec::<f32>("scales")?;
        let scales = scales.map(|v| v.iter().map(|f| f.to_bits()).collect());
        Ok((expand(Upsample { scales }), vec![]))
    });
    reg.insert("Unsqueeze", |ctx: &ParsingContext, node: &NodeProto| {
        if ctx.onnx_operator_set_version < 13 {
            let axes = node.get_attr_vec::<i64>("axes")?.into_iter().map(|a| a as isize).collect();
            Ok((expand(tract_onnx::tract_hir::ops::array::AddDims::new(axes)), vec![]))
        } else {
            Ok((expand(Unsqueeze), vec![]))
        }
    });
    super::bounded::register(reg);
}

/// ONNX `Col2Im`: columns [N, C x prod(block), L] back into an image [N, C, image_shape...].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Col2Im;

impl Expansion for Col2Im {
    fn name(&self) -> StaticName {
        "Col2Im".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 3)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given_3(
            &inputs[0].shape,
            &inputs[1].value,
            &inputs[2].value,
            move |s, x, image, block| {
                let ints = |t: &Tensor| {
                    super::shapes::int_values(t).ok_or_else(|| format_err!("Col2Im: not integers"))
                };
                let (image, block) = (ints(&image)?, ints(&block)?);
                let cells: i64 = block.iter().product();
                if image.len() != block.len() || cells <= 0 {
                    bail!("Col2Im: image_shape {image:?} and block_shape {block:?} do not match");
                }
                let mut shape: TVec<TDim> = tvec![x[0].clone(), x[1].clone() / cells as u64];
                shape.extend(image.iter().map(|&d| TDim::from(d)));
                s.equals(&outputs[0].shape, ShapeFactoid::from(shape))
            },
        )
    }

    run_by_nape_only!("Col2Im");
}

/// ONNX `Upsample` (opsets 7 to 9; `Resize` from opset 10, and tract knows only that): each
/// dim of the input times its scale, rounded down. The scales are an attribute up to opset 8
/// (kept here as `f32` bits) and a constant input from opset 9.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Upsample {
    scales: Option<Vec<u32>>,
}

/// `floor(dim x scale)` for each dim, which must be known.
fn upsampled(shape: &[TDim], scales: &[f32]) -> TractResult<TVec<TDim>> {
    if scales.len() != shape.len() {
        bail!("Upsample: {} scales for a rank-{} input", scales.len(), shape.len());
    }
    let dims = shape
        .iter()
        .zip(scales)
        .map(|(d, &k)| Ok(TDim::from((d.to_i64()? as f64 * f64::from(k)).floor() as i64)));
    dims.collect()
}

impl Expansion for Upsample {
    fn name(&self) -> StaticName {
        "Upsample".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        if let Some(bits) = &self.scales {
            let scales: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            return s.given(&inputs[0].shape, move |s, shape| {
                s.equals(&outputs[0].shape, ShapeFactoid::from(upsampled(&shape, &scales)?))
            });
        }
        check_input_arity(inputs, 2)?;
        s.given_2(&inputs[0].shape, &inputs[1].value, move |s, shape, scales| {
            let scales = scales.cast_to::<f32>()?;
            let scales: Vec<f32> = scales.to_plain_array_view::<f32>()?.iter().copied().collect();
            let dims = upsampled(&shape, &scales)?;
            s.equals(&outputs[0].shape, ShapeFactoid::from(dims))
        })
    }

    run_by_nape_only!("Upsample");
}

/// ONNX `Size`: the element count, as an int64 scalar whose value the analysis knows once the
/// input's shape is known (tract's own rule leaves it without a value until it runs).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Size;

impl Expansion for Size {
    fn name(&self) -> StaticName {
        "Size".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i64::datum_type())?;
        s.equals(&outputs[0].rank, 0)?;
        s.given(&inputs[0].shape, move |s, shape| {
            if let Ok(n) = shape.iter().product::<TDim>().to_i64() {
                s.equals(&outputs[0].value, tensor0(n).into_arc_tensor())?;
            }
            Ok(())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let n = model.outlet_fact(inputs[0])?.shape.iter().product::<TDim>();
        let size = tensor0(n.to_i64()?);
        Ok(tvec!(model.add_const(prefix, size)?))
    }
}

/// ONNX `Unsqueeze` (opset 13: axes as an input). tract's own rule waits for every input dim;
/// this one places each known dim (and the new 1s) as soon as the input's rank is known, so
/// partly known shapes flow through (a loop body's mask of data-dependent size, unsqueezed and
/// appended to a list of known image size).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Unsqueeze;

impl Expansion for Unsqueeze {
    fn name(&self) -> StaticName {
        "Unsqueeze13".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given_2(&outputs[0].rank, &inputs[1].value, move |s, out_rank, axes| {
            s.equals(&inputs[0].rank, out_rank - axes.len() as i64)
        })?;
        s.given_2(&inputs[0].rank, &inputs[1].value, move |s, rank, axes| {
            let axes = super::shapes::int_values(&axes)
                .ok_or_else(|| format_err!("Unsqueeze: axes are not integers"))?;
            let out_rank = rank + axes.len() as i64;
            let new: Vec<i64> =
                axes.iter().map(|&a| if a < 0 { a + out_rank } else { a }).collect();
            s.equals(&outputs[0].rank, out_rank)?;
            let mut from = 0;
            for i in 0..out_rank {
                if new.contains(&i) {
                    s.equals(&outputs[0].shape[i as usize], 1.to_dim())?;
                } else {
                    s.equals(&outputs[0].shape[i as usize], &inputs[0].shape[from])?;
                    from += 1;
                }
            }
            Ok(())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let axes = model.outlet_fact(inputs[1])?.konst.clone();
        let axes = axes
            .as_deref()
            .and_then(super::shapes::int_values)
            .ok_or_else(|| format_err!("{prefix}: Unsqueeze needs constant axes"))?;
        let op = tract_onnx::tract_hir::ops::array::AddDims::new(
            axes.iter().map(|&a| a as isize).collect(),
        );
        op.wire(prefix, model, &inputs[0..1])
    }
}
