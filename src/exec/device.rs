//! Choosing where the executor (and the trainer) run: the CPU, or a CUDA device when one is
//! asked for and present.
//!
//! nape links libtorch's CPU library only; the linker drops `libtorch_cuda.so` because no
//! symbol of it is referenced. On a machine with a GPU and a CUDA build of libtorch 2.11 on the
//! library path, [`resolve`] loads `libtorch_cuda.so` before the first CUDA query, which
//! registers CUDA with libtorch. Without a GPU it falls back to the CPU and says why.

use tch::Device;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// The first CUDA device, falling back to the CPU with a warning.
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(format!("unknown device '{other}' (cpu or cuda)")),
        }
    }
}

/// Loads libtorch's CUDA library once; the handle is kept for the life of the process.
fn load_cuda() -> Result<(), String> {
    use std::sync::OnceLock;
    static HANDLE: OnceLock<Result<libloading::Library, String>> = OnceLock::new();
    let r = HANDLE.get_or_init(|| {
        // SAFETY: loading libtorch's own CUDA library runs its static initialisers, which only
        // register the CUDA backend with the already-loaded libtorch of the same version.
        unsafe { libloading::Library::new("libtorch_cuda.so") }.map_err(|e| e.to_string())
    });
    r.as_ref().map(|_| ()).map_err(|e| e.clone())
}

/// The device to run on, and a message when the choice fell back to the CPU.
pub fn resolve(choice: DeviceChoice) -> (Device, Option<String>) {
    match choice {
        DeviceChoice::Cpu => (Device::Cpu, None),
        DeviceChoice::Cuda => {
            if let Err(e) = load_cuda() {
                return (
                    Device::Cpu,
                    Some(format!("CUDA asked for, but libtorch_cuda.so could not be loaded ({e}); running on the CPU. Put a CUDA build of libtorch 2.11 on LD_LIBRARY_PATH to use the GPU")),
                );
            }
            if tch::Cuda::is_available() {
                (Device::Cuda(0), None)
            } else {
                (
                    Device::Cpu,
                    Some(
                        "CUDA asked for, but libtorch sees no CUDA device; running on the CPU"
                            .into(),
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_cuda_falls_back_with_a_reason() {
        assert_eq!(resolve(DeviceChoice::Cpu), (Device::Cpu, None));
        let (d, msg) = resolve(DeviceChoice::Cuda);
        if d == Device::Cpu {
            assert!(msg.is_some_and(|m| m.contains("CPU")));
        }
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }
}
