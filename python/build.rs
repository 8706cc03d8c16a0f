//! The extension module finds libtorch where the CLI does: a run path to `$LIBTORCH/lib` (the
//! project's `.venv-torch`), so `import nape` needs no LD_LIBRARY_PATH and loads the very
//! library files that Python's `import torch` loads in `.venv-py` (see docs/python.md).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set: the extension will need libtorch on LD_LIBRARY_PATH");
        return;
    };
    let dir = std::path::Path::new(&libtorch);
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}/lib", dir.display());
}
