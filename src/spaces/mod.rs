//! Benchmark search spaces: architecture specs -> ONNX networks.
