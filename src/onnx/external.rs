//! External data: initializers whose bytes live in a side file (`data_location = EXTERNAL`,
//! written by `onnx.save_model(..., save_as_external_data=True)` and by exporters for models
//! over 2 GiB). Read safely: only from files inside the model's own folder (no absolute path,
//! no `..`, no symlink that leads out), and each declared offset and length is checked against
//! the file and the tensor's dims before anything is allocated.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use tract_onnx::pb;

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// Whether any initializer of the model keeps its data in a side file.
pub(super) fn has_external(model: &pb::ModelProto) -> bool {
    model.graph.iter().flat_map(|g| g.initializer.iter()).any(|t| t.data_location == Some(EXTERNAL))
}

/// Where one tensor's bytes are, as the file declares them.
struct Place {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn place(t: &pb::TensorProto, invalid: &dyn Fn(String) -> Error) -> Result<Place> {
    let mut p = Place { location: String::new(), offset: 0, length: None };
    let num = |key: &str, v: &str| {
        v.parse::<u64>().map_err(|_| {
            invalid(format!("initializer '{}': external data {key} '{v}' is not a number", t.name))
        })
    };
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => p.location = kv.value.clone(),
            "offset" => p.offset = num("offset", &kv.value)?,
            "length" => p.length = Some(num("length", &kv.value)?),
            _ => {}
        }
    }
    if p.location.is_empty() {
        return Err(invalid(format!("initializer '{}': external data without a location", t.name)));
    }
    Ok(p)
}

/// The side file `location` names, if it is inside `dir`: a relative path without `..`, and
/// (after following symlinks) still under `dir`.
fn side_file(dir: &Path, location: &str, tensor: &str, source: &str) -> Result<PathBuf> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let rel = Path::new(location);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if rel.is_absolute() || !plain {
        return Err(invalid(format!(
            "initializer '{tensor}': external data location '{location}' is not a file inside the model's folder (absolute paths and '..' are refused)"
        )));
    }
    let path = dir.join(rel);
    let real = path.canonicalize().map_err(|_| Error::MissingData {
        what: format!("external data of initializer '{tensor}' in {source}"),
        path: path.clone(),
        hint: " (it must sit beside the model, as written)".into(),
    })?;
    let real_dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if !real.starts_with(&real_dir) {
        return Err(invalid(format!(
            "initializer '{tensor}': external data location '{location}' leads out of the model's folder (through a symlink)"
        )));
    }
    Ok(real)
}

/// Bytes per element of an ONNX tensor type with a fixed element size.
fn elem_size(data_type: i32) -> Option<u64> {
    Some(match data_type {
        2 | 3 | 9 => 1,        // u8, i8, bool
        4 | 5 | 10 | 16 => 2,  // u16, i16, f16, bf16
        1 | 6 | 12 => 4,       // f32, i32, u32
        7 | 11 | 13 | 14 => 8, // i64, f64, u64, complex64
        15 => 16,              // complex128
        _ => return None,
    })
}

/// Checks where one tensor's bytes are and returns (file, offset, length); nothing is read.
fn locate(t: &pb::TensorProto, dir: &Path, source: &str) -> Result<(PathBuf, u64, u64)> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let p = place(t, &invalid)?;
    let file = side_file(dir, &p.location, &t.name, source)?;
    let size = std::fs::metadata(&file).map_err(|e| Error::io(&file, e))?.len();
    let length = p.length.unwrap_or_else(|| size.saturating_sub(p.offset));
    let end = p.offset.checked_add(length);
    if end.is_none_or(|e| e > size) {
        return Err(invalid(format!(
            "initializer '{}': external data at offset {} length {length} runs past the end of '{}' ({size} bytes)",
            t.name, p.offset, p.location
        )));
    }
    let numel =
        t.dims.iter().try_fold(1u64, |a, &d| u64::try_from(d).ok().and_then(|d| a.checked_mul(d)));
    let want = elem_size(t.data_type).zip(numel).and_then(|(s, n)| s.checked_mul(n));
    if want != Some(length) {
        return Err(invalid(format!(
            "initializer '{}': external data length {length} does not match dims {:?} of type {}",
            t.name, t.dims, t.data_type
        )));
    }
    Ok((file, p.offset, length))
}

/// Reads every external initializer's bytes into the model (checked first, see [`locate`]).
/// `dir` is the model file's folder; bytes without a folder cannot have external data.
pub(super) fn load_external(
    model: &mut pb::ModelProto,
    dir: Option<&Path>,
    source: &str,
) -> Result<()> {
    let Some(graph) = model.graph.as_mut() else { return Ok(()) };
    for t in graph.initializer.iter_mut().filter(|t| t.data_location == Some(EXTERNAL)) {
        let Some(dir) = dir else {
            return Err(Error::InvalidOnnx {
                path: source.into(),
                msg: format!("initializer '{}' keeps its data in a side file, but the model was not read from a folder", t.name),
            });
        };
        let (file, offset, length) = locate(t, dir, source)?;
        let mut f = File::open(&file).map_err(|e| Error::io(&file, e))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&file, e))?;
        let mut bytes = Vec::new();
        f.take(length).read_to_end(&mut bytes).map_err(|e| Error::io(&file, e))?;
        if bytes.len() as u64 != length {
            return Err(Error::io(&file, std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
        }
        t.raw_data = bytes;
        t.data_location = None;
        t.external_data.clear();
        super::widen::tensor(t);
    }
    Ok(())
}

/// For a shapes-only reading ([`super::slim`]): the external initializers that are weights by
/// slim's rule, and whose data slim would not keep for how the nodes read them
/// ([`super::slim::kept_external`]), are checked where they are (every check of [`locate`],
/// nothing read) and become typed graph inputs declared as weights, like the weights slim
/// leaves out of the file; the others are read by [`load_external`].
pub(super) fn declare_external_weights(
    model: &mut pb::ModelProto,
    dir: Option<&Path>,
    source: &str,
) -> Result<()> {
    let Some(graph) = model.graph.as_mut() else { return Ok(()) };
    let kept = super::slim::kept_external(graph);
    let mut names = Vec::new();
    for t in graph.initializer.iter().filter(|t| t.data_location == Some(EXTERNAL)) {
        let dims: Vec<u64> = t.dims.iter().map(|&d| u64::try_from(d).unwrap_or(0)).collect();
        let weight = super::slim::is_weight(t.data_type as u64, &dims) && !kept.contains(&t.name);
        if let (Some(dir), true) = (dir, weight) {
            locate(t, dir, source)?;
            names.push(t.name.clone());
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    let (moved, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut graph.initializer).into_iter().partition(|t| names.contains(&t.name));
    graph.initializer = kept;
    for t in moved {
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let mut vi = super::write::value_info(&t.name, &shape);
        if let Some(pb::type_proto::Value::TensorType(tt)) =
            vi.r#type.as_mut().and_then(|ty| ty.value.as_mut())
        {
            tt.elem_type = super::widen::read_as(t.data_type);
        }
        graph.input.push(vi);
    }
    model.metadata_props.push(pb::StringStringEntryProto {
        key: super::WEIGHT_INPUTS_KEY.to_string(),
        value: names.join(","),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(location: &str, offset: &str, length: &str) -> pb::TensorProto {
        let kv = |k: &str, v: &str| pb::StringStringEntryProto { key: k.into(), value: v.into() };
        pb::TensorProto {
            name: "w".into(),
            dims: vec![2, 2],
            data_type: 1,
            data_location: Some(EXTERNAL),
            external_data: vec![
                kv("location", location),
                kv("offset", offset),
                kv("length", length),
            ],
            ..Default::default()
        }
    }

    fn model(t: pb::TensorProto) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto { initializer: vec![t], ..Default::default() }),
            ..Default::default()
        }
    }

    fn folder_with_data() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<u8> = (0..4u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        std::fs::write(dir.path().join("w.bin"), [vec![9u8; 8], bytes].concat()).expect("write");
        dir
    }

    fn load(t: pb::TensorProto, dir: &Path) -> Result<pb::ModelProto> {
        let mut m = model(t);
        load_external(&mut m, Some(dir), "m.onnx").map(|_| m)
    }

    #[test]
    fn reads_declared_bytes_from_beside_the_model() {
        let dir = folder_with_data();
        let m = load(tensor("w.bin", "8", "16"), dir.path()).expect("loads");
        let t = &m.graph.as_ref().expect("graph").initializer[0];
        assert_eq!(t.raw_data.len(), 16);
        assert_eq!(&t.raw_data[4..8], &1f32.to_le_bytes());
        assert_eq!(t.data_location, None);
    }

    #[test]
    fn refuses_parent_and_absolute_locations() {
        let dir = folder_with_data();
        for loc in ["../../etc/passwd", "/etc/passwd", "sub/../../w.bin"] {
            let e = load(tensor(loc, "0", "16"), dir.path()).expect_err(loc).to_string();
            assert!(
                e.contains("m.onnx") && e.contains("'w'") && e.contains("refused"),
                "{loc}: {e}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_symlink_out_of_the_folder() {
        let outside = folder_with_data();
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path().join("w.bin"), dir.path().join("w.bin"))
            .expect("symlink");
        let e = load(tensor("w.bin", "8", "16"), dir.path()).expect_err("symlink").to_string();
        assert!(e.contains("symlink"), "{e}");
    }

    #[test]
    fn checks_offset_and_length_before_reading() {
        let dir = folder_with_data();
        let past =
            load(tensor("w.bin", "16", "16"), dir.path()).expect_err("past the end").to_string();
        assert!(past.contains("past the end"), "{past}");
        let huge =
            load(tensor("w.bin", "18446744073709551615", "16"), dir.path()).expect_err("overflow");
        assert!(huge.to_string().contains("past the end"), "{huge}");
        let short =
            load(tensor("w.bin", "8", "12"), dir.path()).expect_err("wrong length").to_string();
        assert!(short.contains("does not match dims"), "{short}");
    }

    #[test]
    fn a_missing_side_file_is_missing_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = load(tensor("gone.bin", "0", "16"), dir.path()).expect_err("missing");
        assert!(matches!(e, Error::MissingData { .. }), "{e}");
    }

    #[test]
    fn shapes_only_declares_external_weights_without_reading_them_but_checks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("w.bin"), vec![0u8; 8 * 16 * 4]).expect("write");
        let big = |location: &str| pb::TensorProto {
            dims: vec![8, 16],
            ..tensor(location, "0", &(8 * 16 * 4).to_string())
        };
        let mut m = model(big("w.bin"));
        declare_external_weights(&mut m, Some(dir.path()), "m.onnx").expect("declared");
        let g = m.graph.as_ref().expect("graph");
        assert!(g.initializer.is_empty());
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, "w");
        assert_eq!(m.metadata_props[0].key, crate::onnx::WEIGHT_INPUTS_KEY);
        assert_eq!(m.metadata_props[0].value, "w");
        for bad in ["../../etc/passwd", "/etc/passwd"] {
            let mut m = model(big(bad));
            assert!(declare_external_weights(&mut m, Some(dir.path()), "m.onnx").is_err(), "{bad}");
        }
        let mut short = model(pb::TensorProto { dims: vec![8, 32], ..big("w.bin") });
        assert!(declare_external_weights(&mut short, Some(dir.path()), "m.onnx").is_err());
    }
}
