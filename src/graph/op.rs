//! The closed vocabulary of atomic operations a computation graph is made of.
//!
//! Every ONNX operator nape understands maps to one [`OpKind`]; anything else becomes
//! [`OpKind::Unknown`] with the ONNX name kept, so no information is silently lost.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of an atomic operation in a [`crate::graph::Cg`].
///
/// The vocabulary is closed: new kinds are added here, and `Unknown(name)` keeps the ONNX
/// op type of anything not (yet) in it. The string form (`as_str`) is what JSON, DOT and the
/// feature vocabulary use, and is stable across versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum OpKind {
    // graph boundary
    Input,
    Output,
    // weighted ops
    Conv,
    ConvTranspose,
    /// A matrix product with a static (parameter) operand: Gemm, Linear, MatMul by a weight.
    Linear,
    /// A matrix product of two activations (attention scores, attention-weighted values).
    MatMul,
    // normalisation
    BatchNorm,
    LayerNorm,
    GroupNorm,
    InstanceNorm,
    // activations
    Relu,
    /// ReLU6 (and `Clip(0, 6)`).
    Relu6,
    /// `Clip` with bounds other than (0, 6).
    Clip,
    LeakyRelu,
    Elu,
    Sigmoid,
    Tanh,
    Gelu,
    /// SiLU / Swish: `x * sigmoid(x)`.
    Silu,
    HardSwish,
    HardSigmoid,
    Mish,
    Softplus,
    Softmax,
    LogSoftmax,
    // elementwise arithmetic
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Sqrt,
    Exp,
    Log,
    Neg,
    Abs,
    Reciprocal,
    Erf,
    Max,
    Min,
    Where,
    Compare,
    Cast,
    // tensor plumbing
    Concat,
    Split,
    Slice,
    Gather,
    Reshape,
    Flatten,
    Transpose,
    Squeeze,
    Unsqueeze,
    Expand,
    Tile,
    Pad,
    Resize,
    DepthToSpace,
    SpaceToDepth,
    // pooling and reductions
    MaxPool,
    AvgPool,
    GlobalAvgPool,
    GlobalMaxPool,
    ReduceMean,
    ReduceSum,
    ReduceMax,
    ReduceMin,
    ReduceProd,
    ArgMax,
    // misc
    /// NB-201's `none` op: an output of zeros of the input's shape.
    Zero,
    // added after features v4: the graph names them, the features read them as out of
    // vocabulary until a features version takes them in (see `features::FEATURE_KINDS`)
    /// A long short-term memory layer (ONNX `LSTM`), over the whole sequence.
    Lstm,
    /// A gated recurrent unit layer (ONNX `GRU`).
    Gru,
    /// A plain recurrent layer (ONNX `RNN`).
    Rnn,
    /// Writes updates into a copy of a tensor at given indices (ScatterND, ScatterElements).
    Scatter,
    /// Sums sliding blocks back into an image (ONNX `Col2Im`, PyTorch's `fold`): the inverse
    /// layout of an unfold, overlapping blocks added.
    Col2Im,
    /// The indices of the non-zero elements (ONNX `NonZero`): its size depends on the values.
    NonZero,
    /// The k largest or smallest elements along an axis, with their indices (ONNX `TopK`).
    TopK,
    /// Non-maximum suppression of scored boxes (ONNX `NonMaxSuppression`): the indices kept,
    /// as many as the values say.
    Nms,
    /// Pools a fixed-size map per region of interest by bilinear sampling (ONNX `RoiAlign`).
    RoiAlign,
    /// Rounds to an integer value (ONNX `Floor`, `Ceil`, `Round`).
    Round,
    /// The remainder of a division (ONNX `Mod`).
    Mod,
    /// Runs a subgraph up to a number of times (ONNX `Loop`); its body's work is not counted.
    Loop,
    /// Local response normalization across channels (ONNX `LRN`: AlexNet, GoogLeNet and the
    /// other Caffe-era networks of the ONNX model zoo).
    Lrn,
    /// An ONNX operator outside the vocabulary, by its ONNX op type.
    Unknown(String),
}

/// Every named kind, in vocabulary order (used for one-hot features and docs).
pub const ALL_KINDS: &[OpKind] = &[
    OpKind::Input,
    OpKind::Output,
    OpKind::Conv,
    OpKind::ConvTranspose,
    OpKind::Linear,
    OpKind::MatMul,
    OpKind::BatchNorm,
    OpKind::LayerNorm,
    OpKind::GroupNorm,
    OpKind::InstanceNorm,
    OpKind::Relu,
    OpKind::Relu6,
    OpKind::Clip,
    OpKind::LeakyRelu,
    OpKind::Elu,
    OpKind::Sigmoid,
    OpKind::Tanh,
    OpKind::Gelu,
    OpKind::Silu,
    OpKind::HardSwish,
    OpKind::HardSigmoid,
    OpKind::Mish,
    OpKind::Softplus,
    OpKind::Softmax,
    OpKind::LogSoftmax,
    OpKind::Add,
    OpKind::Sub,
    OpKind::Mul,
    OpKind::Div,
    OpKind::Pow,
    OpKind::Sqrt,
    OpKind::Exp,
    OpKind::Log,
    OpKind::Neg,
    OpKind::Abs,
    OpKind::Reciprocal,
    OpKind::Erf,
    OpKind::Max,
    OpKind::Min,
    OpKind::Where,
    OpKind::Compare,
    OpKind::Cast,
    OpKind::Concat,
    OpKind::Split,
    OpKind::Slice,
    OpKind::Gather,
    OpKind::Reshape,
    OpKind::Flatten,
    OpKind::Transpose,
    OpKind::Squeeze,
    OpKind::Unsqueeze,
    OpKind::Expand,
    OpKind::Tile,
    OpKind::Pad,
    OpKind::Resize,
    OpKind::DepthToSpace,
    OpKind::SpaceToDepth,
    OpKind::MaxPool,
    OpKind::AvgPool,
    OpKind::GlobalAvgPool,
    OpKind::GlobalMaxPool,
    OpKind::ReduceMean,
    OpKind::ReduceSum,
    OpKind::ReduceMax,
    OpKind::ReduceMin,
    OpKind::ReduceProd,
    OpKind::ArgMax,
    OpKind::Zero,
    OpKind::Lstm,
    OpKind::Gru,
    OpKind::Rnn,
    OpKind::Scatter,
    OpKind::Col2Im,
    OpKind::NonZero,
    OpKind::TopK,
    OpKind::Nms,
    OpKind::RoiAlign,
    OpKind::Round,
    OpKind::Mod,
    OpKind::Loop,
    OpKind::Lrn,
];

impl OpKind {
    /// The stable name of this kind (`Unknown` gives its ONNX op type).
    pub fn as_str(&self) -> &str {
        use OpKind::*;
        match self {
            Input => "Input",
            Output => "Output",
            Conv => "Conv",
            ConvTranspose => "ConvTranspose",
            Linear => "Linear",
            MatMul => "MatMul",
            BatchNorm => "BatchNorm",
            LayerNorm => "LayerNorm",
            GroupNorm => "GroupNorm",
            InstanceNorm => "InstanceNorm",
            Relu => "Relu",
            Relu6 => "Relu6",
            Clip => "Clip",
            LeakyRelu => "LeakyRelu",
            Elu => "Elu",
            Sigmoid => "Sigmoid",
            Tanh => "Tanh",
            Gelu => "Gelu",
            Silu => "Silu",
            HardSwish => "HardSwish",
            HardSigmoid => "HardSigmoid",
            Mish => "Mish",
            Softplus => "Softplus",
            Softmax => "Softmax",
            LogSoftmax => "LogSoftmax",
            Add => "Add",
            Sub => "Sub",
            Mul => "Mul",
            Div => "Div",
            Pow => "Pow",
            Sqrt => "Sqrt",
            Exp => "Exp",
            Log => "Log",
            Neg => "Neg",
            Abs => "Abs",
            Reciprocal => "Reciprocal",
            Erf => "Erf",
            Max => "Max",
            Min => "Min",
            Where => "Where",
            Compare => "Compare",
            Cast => "Cast",
            Concat => "Concat",
            Split => "Split",
            Slice => "Slice",
            Gather => "Gather",
            Reshape => "Reshape",
            Flatten => "Flatten",
            Transpose => "Transpose",
            Squeeze => "Squeeze",
            Unsqueeze => "Unsqueeze",
            Expand => "Expand",
            Tile => "Tile",
            Pad => "Pad",
            Resize => "Resize",
            DepthToSpace => "DepthToSpace",
            SpaceToDepth => "SpaceToDepth",
            MaxPool => "MaxPool",
            AvgPool => "AvgPool",
            GlobalAvgPool => "GlobalAvgPool",
            GlobalMaxPool => "GlobalMaxPool",
            ReduceMean => "ReduceMean",
            ReduceSum => "ReduceSum",
            ReduceMax => "ReduceMax",
            ReduceMin => "ReduceMin",
            ReduceProd => "ReduceProd",
            ArgMax => "ArgMax",
            Zero => "Zero",
            Lstm => "LSTM",
            Gru => "GRU",
            Rnn => "RNN",
            Scatter => "Scatter",
            Col2Im => "Col2Im",
            NonZero => "NonZero",
            TopK => "TopK",
            Nms => "NonMaxSuppression",
            RoiAlign => "RoiAlign",
            Round => "Round",
            Mod => "Mod",
            Loop => "Loop",
            Lrn => "LRN",
            Unknown(s) => s,
        }
    }

    /// Index in [`ALL_KINDS`]; `Unknown` kinds share index `ALL_KINDS.len()`.
    pub fn index(&self) -> usize {
        ALL_KINDS.iter().position(|k| k == self).unwrap_or(ALL_KINDS.len())
    }

    /// Whether the op carries trainable weights by its nature (GENNAPE's "weighted" nodes).
    pub fn is_weighted(&self) -> bool {
        matches!(self, OpKind::Conv | OpKind::ConvTranspose | OpKind::Linear)
    }

    /// Ops that only move or reinterpret data (no arithmetic on values).
    pub fn is_shape_op(&self) -> bool {
        use OpKind::*;
        matches!(
            self,
            Reshape
                | Flatten
                | Transpose
                | Squeeze
                | Unsqueeze
                | Expand
                | Tile
                | Slice
                | Split
                | Gather
                | Concat
                | Cast
                | DepthToSpace
                | SpaceToDepth
        )
    }

    /// Whether this is `Unknown(_)`.
    pub fn is_unknown(&self) -> bool {
        matches!(self, OpKind::Unknown(_))
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<OpKind> for String {
    fn from(k: OpKind) -> String {
        k.as_str().to_string()
    }
}

impl From<String> for OpKind {
    fn from(s: String) -> OpKind {
        ALL_KINDS.iter().find(|k| k.as_str() == s).cloned().unwrap_or(OpKind::Unknown(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for k in ALL_KINDS {
            assert!(seen.insert(k.as_str()), "duplicate name {k}");
            assert_eq!(OpKind::from(k.as_str().to_string()), *k);
            assert!(!k.is_unknown());
        }
        assert_eq!(OpKind::from("FancyOp".to_string()), OpKind::Unknown("FancyOp".into()));
        assert_eq!(OpKind::Unknown("X".into()).index(), ALL_KINDS.len());
    }
}
