//! Fuzzes the ONNX loader, reading everything and reading shapes only (`onnx::slim`, its own
//! protobuf walker): any bytes must give a Cg or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nape::onnx::{load_bytes, ImportOptions};

fuzz_target!(|data: &[u8]| {
    let _ = load_bytes(data, "fuzz.onnx", &ImportOptions::default());
    let _ = load_bytes(data, "fuzz.onnx", &ImportOptions { shapes_only: true, ..Default::default() });
});
