//! A CG's nodes: an op with its attributes, shapes, counts and constant operands.

use super::{OpKind, Shape};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Attributes of an op that matter to features and costs. Fields that do not apply stay empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attrs {
    /// Spatial kernel size (conv, pooling), one entry per spatial axis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel: Vec<usize>,
    /// Strides, one per spatial axis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stride: Vec<usize>,
    /// Paddings as ONNX writes them: all begins, then all ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub padding: Vec<usize>,
    /// Dilations, one per spatial axis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dilation: Vec<usize>,
    /// Convolution groups (1 = dense; equal to input channels = depthwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Whether a weighted op adds a bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
    /// Axis or axes the op works along (softmax, concat, reductions, norms, transpose permutation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub axes: Vec<i64>,
    /// Scalar parameters (clip bounds, leaky slope, epsilon ...), by ONNX attribute name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

/// One atomic operation of a [`Cg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpNode {
    /// What the op is.
    pub kind: OpKind,
    /// The node's name in its source (ONNX node name, or its first output's name).
    pub name: String,
    /// The ONNX op type it came from (`Conv`, `Gemm`, ...); for Input/Output nodes, "".
    pub onnx_op: String,
    /// Attributes.
    pub attrs: Attrs,
    /// Shapes of its activation inputs, in input order (parameters are not listed).
    pub in_shapes: Vec<Shape>,
    /// Shapes of its outputs, in output order.
    pub out_shapes: Vec<Shape>,
    /// Trainable parameters it owns (weights shared between nodes are counted once, at the
    /// first node in topological order).
    pub params: u64,
    /// Multiply-accumulate operations of its matrix/convolution work.
    pub macs: u64,
    /// Floating-point operations, counting a multiply-accumulate as 2 (see `docs/costs.md`).
    pub flops: u64,
    /// The ONNX input slot of each activation input, in activation-input order (what the
    /// executor needs to put activations and operands back in the op's argument order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub act_slots: Vec<usize>,
    /// The static operands (parameters and constants) the op reads, by ONNX input slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operands: Vec<Operand>,
    /// Every attribute of the source ONNX node, as it was written (the executor's reference;
    /// features read the normalised [`Attrs`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub onnx_attrs: BTreeMap<String, AttrValue>,
    /// Its shapes follow a count that depends on the input's values (after `NonZero` or
    /// `NonMaxSuppression`): they, its MACs and FLOPs are upper bounds, every element
    /// selected (`docs/costs.md`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounded: bool,
}

/// A static input of a node: a trainable parameter or a constant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operand {
    /// The ONNX input slot it fills.
    pub slot: usize,
    /// The tensor's name in the source (a weight shared by two nodes has one name).
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Whether it is a trainable parameter (a float tensor of more than one element at a
    /// parameter slot), as opposed to a constant (running statistics, shapes, indices, scalars).
    pub param: bool,
    /// Its values, when the file holds them (weights exported without data have none).
    #[serde(skip)]
    pub value: Option<ConstValue>,
}

/// The values of a static operand.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstValue {
    /// Floating-point data, as f32.
    Float(std::sync::Arc<Vec<f32>>),
    /// Integer or boolean data, as i64.
    Int(std::sync::Arc<Vec<i64>>),
}

/// An ONNX attribute's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOATS`.
    Floats(Vec<f64>),
    /// `STRING`.
    Str(String),
}

impl OpNode {
    /// The integer attribute `name`, or `default`.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        match self.onnx_attrs.get(name) {
            Some(AttrValue::Int(v)) => *v,
            _ => default,
        }
    }

    /// The float attribute `name`, or `default`.
    pub fn attr_float(&self, name: &str, default: f64) -> f64 {
        match self.onnx_attrs.get(name) {
            Some(AttrValue::Float(v)) => *v,
            Some(AttrValue::Int(v)) => *v as f64,
            _ => default,
        }
    }

    /// The ints attribute `name`, if present.
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.onnx_attrs.get(name) {
            Some(AttrValue::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// The string attribute `name`, if present.
    pub fn attr_str(&self, name: &str) -> Option<&str> {
        match self.onnx_attrs.get(name) {
            Some(AttrValue::Str(v)) => Some(v),
            _ => None,
        }
    }

    /// The operand filling ONNX input slot `slot`, if it is static.
    pub fn operand(&self, slot: usize) -> Option<&Operand> {
        self.operands.iter().find(|o| o.slot == slot)
    }
}

impl OpNode {
    /// A node with no attributes, shapes or costs yet.
    pub fn new(kind: OpKind, name: impl Into<String>) -> OpNode {
        OpNode {
            kind,
            name: name.into(),
            onnx_op: String::new(),
            attrs: Attrs::default(),
            in_shapes: Vec::new(),
            out_shapes: Vec::new(),
            params: 0,
            macs: 0,
            flops: 0,
            act_slots: Vec::new(),
            operands: Vec::new(),
            onnx_attrs: BTreeMap::new(),
            bounded: false,
        }
    }

    /// The first output's shape (empty for Output nodes).
    pub fn out_shape(&self) -> &[usize] {
        self.out_shapes.first().map(|s| s.as_slice()).unwrap_or(&[])
    }
}
