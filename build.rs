//! Embeds a run path to libtorch so `cargo run`, `cargo test` and nextest need no LD_LIBRARY_PATH,
//! and keeps libtorch out of the `nape` binary (see `src/main.rs`).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    reader_digest();
    // `nape` never calls into libtorch, but the C++ inline functions of tch's wrapper are
    // exported by default (a shared library could bind to them), which keeps them and, through
    // them, libtorch_cpu and libc10 linked: 0.27 CPU-s and 120 MB of start-up for `inspect`.
    // Not exporting what static archives define lets the linker drop all of it.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=nape=-Wl,--exclude-libs,ALL");
    }
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let path = std::path::Path::new(&libtorch);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
            std::path::Path::new(&root).join(path)
        };
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}/lib", abs.display());
    }
}

/// The code that turns an ONNX file into its graph, features and proxy scores (these folders
/// of `src/`): a digest of it keys the caches of users' files (`NAPE_READER_DIGEST`), so that
/// a nape that reads a file differently never serves what an older one read. FNV-1a over the
/// sorted paths and contents: deterministic, no dependency.
const READER_CODE: [&str; 5] = ["src/onnx", "src/graph", "src/features", "src/exec", "src/proxies"];

fn reader_digest() {
    let mut files = Vec::new();
    for dir in READER_CODE {
        println!("cargo:rerun-if-changed={dir}");
        collect(std::path::Path::new(dir), &mut files);
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for b in f.to_string_lossy().bytes().chain([0]).chain(bytes) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=NAPE_READER_DIGEST={h:016x}");
}

fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
