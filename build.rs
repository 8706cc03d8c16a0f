//! Embeds a run path to libtorch so `cargo run`, `cargo test` and nextest need no LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
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
