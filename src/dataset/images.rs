//! Image batches for the data-dependent proxies: real images from IDX files (Fashion-MNIST),
//! CIFAR-10 binary batches or a folder of PNG/JPEG files, resized (bilinear) and
//! channel-replicated to a network's input shape, standardised, and drawn with a seed. Random
//! Gaussian batches exist as an explicit choice, never as a silent fallback.

use crate::dataset::SplitMix64;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// An IDX image file (gzip or raw), with its label file beside it when there is one
    /// (`*-images-idx3-ubyte*` -> `*-labels-idx1-ubyte*`).
    Idx(PathBuf),
    /// A CIFAR-10 binary batch (`data_batch_1.bin`: a label byte and 3,072 pixel bytes a row).
    Cifar(PathBuf),
    /// A folder of PNG/JPEG images; labels are the index of the image's sub-folder, or 0.
    Folder(PathBuf),
    /// Standard normal noise (labels drawn uniformly from `classes`).
    Gaussian {
        /// Label count.
        classes: usize,
    },
}

impl ImageSource {
    /// The source a path names: an IDX or CIFAR file by its name, else a folder.
    pub fn from_path(p: &Path) -> ImageSource {
        let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if p.is_dir() {
            ImageSource::Folder(p.to_path_buf())
        } else if name.contains("idx") {
            ImageSource::Idx(p.to_path_buf())
        } else {
            ImageSource::Cifar(p.to_path_buf())
        }
    }

    /// The source an `--images` argument names: `gaussian` (10 classes), a file or folder
    /// ([`Self::from_path`]), or, when none is given, Fashion-MNIST from the data folder.
    pub fn from_arg(arg: Option<&str>, data_dir: &Path) -> Result<ImageSource> {
        match arg {
            Some("gaussian") => Ok(ImageSource::Gaussian { classes: 10 }),
            Some(p) => Ok(ImageSource::from_path(Path::new(p))),
            None => ImageSource::fashion_mnist(data_dir),
        }
    }

    /// Fashion-MNIST's test images in the data folder.
    pub fn fashion_mnist(data_dir: &Path) -> Result<ImageSource> {
        let p = super::data_file(
            data_dir,
            "fashion_mnist/t10k-images-idx3-ubyte.gz",
            "Fashion-MNIST test images (proxy batches)",
        )?;
        Ok(ImageSource::Idx(p))
    }

    /// What the images are, for cache keys. An IDX or CIFAR file: an MD5 over its bytes (and
    /// the label file's beside an IDX file). A folder, which may hold a dataset: an MD5 over
    /// each image's path inside the folder, size and label, in the order it is read. How the
    /// path to the data is spelled changes no value, so it is not in the key
    /// (`../shared/data` and `/work/shared/data` are the same images).
    pub fn content_key(&self) -> Result<String> {
        use md5::{Digest, Md5};
        let mut h = Md5::new();
        match self {
            ImageSource::Idx(p) | ImageSource::Cifar(p) => {
                for f in std::iter::once(p.clone()).chain(idx_labels(p)) {
                    let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
                    h.update(0i64.to_le_bytes()); // the key's first form had a label here
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
            }
            ImageSource::Folder(d) => {
                for (f, label) in folder_files(d)? {
                    let size = std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?.len();
                    let inside = f.strip_prefix(d).unwrap_or(&f).to_string_lossy().to_string();
                    h.update((inside.len() as u64).to_le_bytes());
                    h.update(inside.as_bytes());
                    h.update(size.to_le_bytes());
                    h.update(label.to_le_bytes());
                }
            }
            ImageSource::Gaussian { classes } => {
                return Ok(format!("gaussian noise, {classes} classes"));
            }
        }
        Ok(format!("{:x}", h.finalize()))
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Idx(p) | ImageSource::Cifar(p) | ImageSource::Folder(p) => {
                p.display().to_string()
            }
            ImageSource::Gaussian { .. } => "gaussian noise".into(),
        }
    }
}

/// A batch in NCHW order, float32, standardised per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    /// Pixel values, row-major.
    pub data: Vec<f32>,
    /// One label per image.
    pub labels: Vec<i64>,
}

/// Decoded images before resizing: `n` images of `c x h x w` bytes.
struct Raw {
    c: usize,
    h: usize,
    w: usize,
    images: Vec<Vec<u8>>,
    labels: Vec<i64>,
}

fn read_maybe_gz(p: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingData {
                what: "image file".into(),
                path: p.to_path_buf(),
                hint: " (pass --images FILE|DIR, or --images gaussian for noise)".into(),
            }
        } else {
            Error::io(p, e)
        }
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::BadData { path: p.into(), line: 0, msg: format!("gzip: {e}") })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], at: usize) -> usize {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize).unwrap_or(0)
}

/// The label file beside an IDX image file, when there is one.
fn idx_labels(p: &Path) -> Option<PathBuf> {
    let name = p.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let lp = p.with_file_name(name.replace("images-idx3", "labels-idx1"));
    (lp != p && lp.exists()).then_some(lp)
}

fn read_idx(p: &Path) -> Result<Raw> {
    let bad = |msg: String| Error::BadData { path: p.into(), line: 0, msg };
    let b = read_maybe_gz(p)?;
    if b.len() < 16 || be_u32(&b, 0) != 0x803 {
        return Err(bad("not an IDX image file (magic 0x00000803)".into()));
    }
    let (n, h, w) = (be_u32(&b, 4), be_u32(&b, 8), be_u32(&b, 12));
    if n == 0 || b.len() != 16 + n * h * w {
        return Err(bad(format!(
            "header says {n} images of {h}x{w}, the file has {} bytes",
            b.len()
        )));
    }
    let images: Vec<Vec<u8>> = b[16..].chunks(h * w).map(|c| c.to_vec()).collect();
    let labels = if let Some(lp) = idx_labels(p) {
        let l = read_maybe_gz(&lp)?;
        if l.len() != 8 + n || be_u32(&l, 0) != 0x801 {
            return Err(Error::BadData {
                path: lp,
                line: 0,
                msg: "label file does not match the images".into(),
            });
        }
        l[8..].iter().map(|&v| v as i64).collect()
    } else {
        vec![0; n]
    };
    Ok(Raw { c: 1, h, w, images, labels })
}

fn read_cifar(p: &Path) -> Result<Raw> {
    let b = read_maybe_gz(p)?;
    const ROW: usize = 1 + 3 * 32 * 32;
    if b.is_empty() || b.len() % ROW != 0 {
        return Err(Error::BadData {
            path: p.into(),
            line: 0,
            msg: format!("{} bytes is not a whole number of CIFAR-10 rows of {ROW}", b.len()),
        });
    }
    let (images, labels) = b.chunks(ROW).map(|r| (r[1..].to_vec(), r[0] as i64)).unzip();
    Ok(Raw { c: 3, h: 32, w: 32, images, labels })
}

/// A folder's images with their labels (the index of their sub-folder, or 0), in order.
fn folder_files(dir: &Path) -> Result<Vec<(PathBuf, i64)>> {
    let mut files: Vec<(PathBuf, i64)> = Vec::new();
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    classes.sort();
    let is_image = |p: &Path| {
        p.extension()
            .map(|x| x.to_string_lossy().to_lowercase())
            .is_some_and(|x| matches!(x.as_str(), "png" | "jpg" | "jpeg"))
    };
    let mut label = 0i64;
    for c in &classes {
        if c.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(c)
                .map_err(|e| Error::io(c, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            inner.sort();
            files.extend(inner.into_iter().map(|p| (p, label)));
            label += 1;
        } else if is_image(c) {
            files.push((c.clone(), 0));
        }
    }
    if files.is_empty() {
        return Err(Error::MissingData {
            what: "images (PNG/JPEG)".into(),
            path: dir.into(),
            hint: String::new(),
        });
    }
    Ok(files)
}

fn read_folder(dir: &Path, want: usize, seed: u64) -> Result<Raw> {
    let files = folder_files(dir)?;
    let order = draw(files.len(), want, seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let (h, w) = (64usize, 64usize);
    for i in order {
        let (p, l) = &files[i];
        let img = image::open(p).map_err(|e| Error::BadData {
            path: p.clone(),
            line: 0,
            msg: e.to_string(),
        })?;
        let rgb = image::imageops::resize(
            &img.to_rgb8(),
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        );
        // to planar CHW
        let raw = rgb.into_raw();
        let mut chw = vec![0u8; 3 * h * w];
        for (k, px) in raw.chunks(3).enumerate() {
            for c in 0..3 {
                chw[c * h * w + k] = px[c];
            }
        }
        images.push(chw);
        labels.push(*l);
    }
    Ok(Raw { c: 3, h, w, images, labels })
}

/// `want` distinct indices of `0..n` drawn with `seed` (all of them, shuffled, when `want >= n`;
/// with repetition when `want > n`).
fn draw(n: usize, want: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    SplitMix64(seed).shuffle(&mut idx);
    (0..want).map(|k| idx[k % n]).collect()
}

/// Bilinear resize of one channel (align_corners = false, as torchvision's Resize).
fn resize(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let mut out = vec![0f32; oh * ow];
    let sy = h as f32 / oh as f32;
    let sx = w as f32 / ow as f32;
    for y in 0..oh {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(h - 1);
        for x in 0..ow {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(w - 1);
            let a = src[y0 * w + x0] * (1.0 - tx) + src[y0 * w + x1] * tx;
            let b = src[y1 * w + x0] * (1.0 - tx) + src[y1 * w + x1] * tx;
            out[y * ow + x] = a * (1.0 - ty) + b * ty;
        }
    }
    out
}

/// Draws `n` images with `seed` from `source`, shaped `[n, c, h, w]`: resized bilinearly,
/// grey replicated to every channel (or colour averaged to one), scaled to [0, 1] and
/// standardised per channel with the batch's mean and standard deviation.
pub fn load_batch(
    source: &ImageSource,
    n: usize,
    chw: [usize; 3],
    seed: u64,
) -> Result<ImageBatch> {
    let [c, h, w] = chw;
    if n == 0 || c == 0 || h == 0 || w == 0 {
        return Err(Error::Usage(format!("an image batch of {n} x {c} x {h} x {w} is empty")));
    }
    if let ImageSource::Gaussian { classes } = source {
        return Ok(gaussian_batch(n, chw, seed, *classes));
    }
    let raw = raw_images(source, n, seed)?;
    let picks = match source {
        ImageSource::Folder(_) => (0..raw.images.len()).collect(),
        _ => draw(raw.images.len(), n, seed),
    };
    let mut data = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for &i in &picks {
        for ch in 0..c {
            data.extend(channel(&raw, &raw.images[i], ch, chw));
        }
        labels.push(raw.labels[i]);
    }
    standardise(&mut data, n, chw);
    Ok(ImageBatch { shape: [n, c, h, w], data, labels })
}

/// `n` images of standard normal pixels and uniform labels below `classes`, drawn with `seed`.
fn gaussian_batch(n: usize, chw: [usize; 3], seed: u64, classes: usize) -> ImageBatch {
    let [c, h, w] = chw;
    let mut rng = SplitMix64(seed);
    let mut data = Vec::with_capacity(n * c * h * w);
    while data.len() < n * c * h * w {
        let u1 = ((rng.next() >> 11) as f64 / (1u64 << 53) as f64).max(f64::MIN_POSITIVE);
        let u2 = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        data.push((r * (std::f64::consts::TAU * u2).cos()) as f32);
        data.push((r * (std::f64::consts::TAU * u2).sin()) as f32);
    }
    data.truncate(n * c * h * w);
    let labels = (0..n).map(|_| (rng.next() % classes.max(1) as u64) as i64).collect();
    ImageBatch { shape: [n, c, h, w], data, labels }
}

/// The decoded images of a file or folder source. Files are decoded once per process:
/// proxies draw many batches from the same file; a folder reads `n` images drawn with `seed`.
fn raw_images(source: &ImageSource, n: usize, seed: u64) -> Result<Arc<Raw>> {
    match source {
        ImageSource::Idx(p) | ImageSource::Cifar(p) => {
            static FILES: Mutex<Vec<(PathBuf, Arc<Raw>)>> = Mutex::new(Vec::new());
            let cached = FILES
                .lock()
                .ok()
                .and_then(|f| f.iter().find(|(q, _)| q == p).map(|(_, r)| r.clone()));
            if let Some(r) = cached {
                return Ok(r);
            }
            let r = Arc::new(if matches!(source, ImageSource::Idx(_)) {
                read_idx(p)?
            } else {
                read_cifar(p)?
            });
            if let Ok(mut f) = FILES.lock() {
                f.push((p.clone(), r.clone()));
            }
            Ok(r)
        }
        ImageSource::Folder(p) => Ok(Arc::new(read_folder(p, n, seed)?)),
        ImageSource::Gaussian { .. } => {
            Err(Error::Usage("gaussian batches are drawn above".into()))
        }
    }
}

/// Channel `ch` of one image, scaled to [0, 1] and resized to `h x w`: grey replicated to
/// every channel, colour averaged when the network takes one, else the image's channel `ch`
/// (modulo its channel count).
fn channel(raw: &Raw, img: &[u8], ch: usize, chw: [usize; 3]) -> Vec<f32> {
    let [c, h, w] = chw;
    let plane = raw.h * raw.w;
    let src: Vec<f32> = if raw.c == 1 {
        img[..plane].iter().map(|&v| v as f32 / 255.0).collect()
    } else if c == 1 {
        (0..plane)
            .map(|k| {
                (0..raw.c).map(|q| img[q * plane + k] as f32).sum::<f32>() / (255.0 * raw.c as f32)
            })
            .collect()
    } else {
        let q = ch % raw.c;
        img[q * plane..(q + 1) * plane].iter().map(|&v| v as f32 / 255.0).collect()
    };
    if raw.h == h && raw.w == w {
        src
    } else {
        resize(&src, raw.h, raw.w, h, w)
    }
}

/// Standardises each channel of an `[n, c, h, w]` batch with its mean and standard deviation.
fn standardise(data: &mut [f32], n: usize, chw: [usize; 3]) {
    let [c, h, w] = chw;
    for ch in 0..c {
        let vals = || (0..n).flat_map(|i| (0..h * w).map(move |k| (i * c + ch) * h * w + k));
        let count = (n * h * w) as f64;
        let mean = vals().map(|k| data[k] as f64).sum::<f64>() / count;
        let var = vals().map(|k| (data[k] as f64 - mean).powi(2)).sum::<f64>() / count;
        let std = var.sqrt().max(1e-6);
        for k in vals().collect::<Vec<_>>() {
            data[k] = ((data[k] as f64 - mean) / std) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_file(dir: &Path, n: usize) -> PathBuf {
        let mut b = vec![0, 0, 8, 3];
        for v in [n as u32, 4, 4] {
            b.extend(v.to_be_bytes());
        }
        for i in 0..n * 16 {
            b.push((i * 7 % 256) as u8);
        }
        let p = dir.join("t-images-idx3-ubyte");
        std::fs::write(&p, b).expect("write");
        let mut l = vec![0, 0, 8, 1];
        l.extend((n as u32).to_be_bytes());
        l.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join("t-labels-idx1-ubyte"), l).expect("write");
        p
    }

    #[test]
    fn the_content_key_follows_the_bytes_read_not_the_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = idx_file(dir.path(), 20);
        let key = ImageSource::Idx(p.clone()).content_key().expect("key");
        // the same file by another spelling of its path
        let other = dir.path().join(".").join(p.file_name().expect("name"));
        assert_eq!(ImageSource::Idx(other).content_key().expect("key"), key);
        // other labels beside the same images are other data
        std::fs::write(dir.path().join("t-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 0])
            .expect("write");
        assert_ne!(ImageSource::Idx(p).content_key().expect("key"), key);
        // a folder by two spellings; another image in it is other data
        let imgs = dir.path().join("imgs");
        std::fs::create_dir(&imgs).expect("mkdir");
        std::fs::write(imgs.join("a.png"), [1u8, 2, 3]).expect("write");
        let key = ImageSource::Folder(imgs.clone()).content_key().expect("key");
        let other = ImageSource::Folder(dir.path().join(".").join("imgs"));
        assert_eq!(other.content_key().expect("key"), key);
        std::fs::write(imgs.join("b.png"), [4u8]).expect("write");
        assert_ne!(other.content_key().expect("key"), key);
    }

    #[test]
    fn idx_batches_are_resized_replicated_standardised_and_seeded() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = ImageSource::Idx(idx_file(dir.path(), 20));
        let a = load_batch(&src, 6, [3, 8, 8], 1).expect("batch");
        let b = load_batch(&src, 6, [3, 8, 8], 1).expect("batch");
        let c = load_batch(&src, 6, [3, 8, 8], 2).expect("batch");
        assert_eq!(a, b);
        assert_ne!(a.labels, c.labels);
        assert_eq!(a.shape, [6, 3, 8, 8]);
        assert_eq!(a.data.len(), 6 * 3 * 64);
        // grey replicated: channel 0 equals channel 1 of each image
        assert_eq!(a.data[..64], a.data[64..128]);
        let mean = a.data.iter().map(|&v| v as f64).sum::<f64>() / a.data.len() as f64;
        assert!(mean.abs() < 1e-4);
        assert!(a.labels.iter().all(|&l| (0..10).contains(&l)));
    }

    #[test]
    fn truncated_and_missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&p, [0, 0, 8, 3, 0, 0, 0, 9]).expect("write");
        let e = load_batch(&ImageSource::Idx(p.clone()), 2, [1, 4, 4], 0).expect_err("bad");
        assert!(e.to_string().contains("x-images-idx3-ubyte"), "{e}");
        let e = load_batch(&ImageSource::Cifar(dir.path().join("none.bin")), 2, [3, 4, 4], 0)
            .expect_err("missing");
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn gaussian_is_explicit_and_seeded() {
        let g = ImageSource::Gaussian { classes: 10 };
        let a = load_batch(&g, 4, [3, 5, 5], 9).expect("batch");
        assert_eq!(a, load_batch(&g, 4, [3, 5, 5], 9).expect("batch"));
        assert!(a.data.iter().all(|v| v.is_finite()));
    }
}
