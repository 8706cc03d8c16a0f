//! Embeds a run path to libtorch so `cargo run`, `cargo test` and nextest need no LD_LIBRARY_PATH,
//! and keeps libtorch out of the `nape` binary (see `src/main.rs`).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
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
