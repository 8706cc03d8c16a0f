//! Shape rules for ONNX ops tract's parser does not know, registered on the parser nape's
//! analysis uses, so the analysis flows through them (PyTorch's `fold` exports as `Col2Im`).
//! tract cannot run them: typing one is an error naming it (nape's executor runs them).

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// tract's ONNX parser with nape's extra shape rules.
pub(super) fn parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    register(&mut onnx.op_register);
    onnx
}

fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Col2Im", |_: &ParsingContext, _: &NodeProto| Ok((expand(Col2Im), vec![])));
    reg.insert("Size", |_: &ParsingContext, _: &NodeProto| Ok((expand(Size), vec![])));
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

    fn wire(
        &self,
        prefix: &str,
        _model: &mut TypedModel,
        _inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        bail!("{prefix}: tract cannot run Col2Im (nape's executor can)")
    }
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
