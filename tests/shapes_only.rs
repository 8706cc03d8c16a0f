//! The shapes-only reader (`onnx::slim`, what `inspect` and `predict` use) gives the same graph
//! as reading every weight's bytes: the same totals and the same canonical graph hash, on every
//! committed ONNX file (tests/corpus: generated ops, the torchvision zoo, the real-world sample,
//! the three exporters' files).

use nape::cli::collect_onnx_files;
use nape::onnx::{load, ImportOptions};
use std::path::Path;

#[test]
fn reading_shapes_only_gives_the_graph_of_reading_everything() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = collect_onnx_files(std::slice::from_ref(&root));
    files.sort();
    assert!(files.len() >= 40, "expected the committed corpus under {}", root.display());
    let full = ImportOptions::default();
    let slim = ImportOptions { shapes_only: true, ..Default::default() };
    let mut compared = 0;
    for f in &files {
        let (a, b) = (load(f, &full), load(f, &slim));
        let (Ok(a), Ok(b)) = (a, b) else {
            // a file the full reader refuses (bad-input fixtures) must be refused either way
            assert!(load(f, &full).is_err() && load(f, &slim).is_err(), "{}", f.display());
            continue;
        };
        let (sa, sb) = (a.summary(), b.summary());
        let what = f.display();
        assert_eq!(
            (sa.nodes, sa.params, sa.macs, sa.flops),
            (sb.nodes, sb.params, sb.macs, sb.flops),
            "{what}"
        );
        assert_eq!(a.canonical().structure_hash(), b.canonical().structure_hash(), "{what}");
        compared += 1;
    }
    assert!(compared >= 40, "only {compared} files compared");
}
