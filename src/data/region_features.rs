//! Precomputed detector region features (the original LXMERT release's base64 TSV files),
//! converted once into one safetensors file that training memory-maps.
//!
//! The TSV has one image per line with the fields `img_id, img_h, img_w, objects_id,
//! objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features`; the last six are base64 of
//! little-endian arrays (int64 ids, float32 confidences, `[num_boxes, 4]` float32 boxes in
//! pixels, `[num_boxes, d]` float32 features). Loading such files whole into every data worker
//! is what drove one LXMERT user past 200 GB of RAM (airsplay/lxmert issue 37); a memory map is
//! shared by every reader through the page cache instead.
//!
//! The converted file holds `features [n, max_boxes, d]` (f32), `boxes [n, max_boxes, 4]` (f32,
//! divided by the image width and height), `num_boxes [n]`, `objects [n, max_boxes]` and
//! `attributes [n, max_boxes]` (i64, -1 past `num_boxes`) and `image_ids [n]` (i64, the number
//! at the end of `img_id`, e.g. 42 for `COCO_val2014_000000000042`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::nn::Backend;
use base64::Engine;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

/// The TSV columns, in order.
pub const TSV_FIELDS: [&str; 10] = [
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
];

/// A feature file that cannot be converted or read, naming the file, line and image at fault.
#[derive(Debug, thiserror::Error)]
pub enum RegionFeatureError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line} (image {image_id}): {message}")]
    Row {
        path: PathBuf,
        line: usize,
        image_id: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("image {image_id} is not in the feature file {path}")]
    MissingImage { path: PathBuf, image_id: u64 },
}

/// One decoded TSV line.
struct TsvRow {
    image_id: u64,
    height: f32,
    width: f32,
    objects: Vec<i64>,
    attributes: Vec<i64>,
    boxes: Vec<f32>,
    features: Vec<f32>,
}

/// What a conversion found.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionSummary {
    pub images: usize,
    pub max_boxes: usize,
    pub d_feature: usize,
}

fn decode_base64(field: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(field.trim())
        .map_err(|e| format!("not base64: {e}"))
}

/// The number of bytes `field` decodes to, without decoding it.
fn base64_len(field: &str) -> usize {
    let field = field.trim();
    let padding = field.bytes().rev().take_while(|&b| b == b'=').count();
    field.len() / 4 * 3 - padding.min(2)
}

fn parse_image_id(raw: &str) -> Option<u64> {
    raw.rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|digits| !digits.is_empty())
        .and_then(|digits| digits.parse().ok())
}

/// Splits a line into its ten fields and reads the scalar ones; the arrays stay undecoded.
fn split_line<'a>(
    line: &'a str,
    row_error: &dyn Fn(&str, String) -> RegionFeatureError,
) -> Result<(u64, [&'a str; 10], usize), RegionFeatureError> {
    let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split('\t').collect();
    let raw_id = fields.first().copied().unwrap_or("");
    let fields: [&str; 10] = fields.try_into().map_err(|f: Vec<&str>| {
        row_error(
            raw_id,
            format!(
                "{} tab-separated fields, expected 10 ({})",
                f.len(),
                TSV_FIELDS.join(", ")
            ),
        )
    })?;
    let image_id = parse_image_id(raw_id)
        .ok_or_else(|| row_error(raw_id, "img_id does not end in a number".into()))?;
    let num_boxes: usize = fields[7]
        .trim()
        .parse()
        .map_err(|_| row_error(raw_id, format!("num_boxes {:?} is not a count", fields[7])))?;
    Ok((image_id, fields, num_boxes))
}

fn decode_row(
    fields: [&str; 10],
    image_id: u64,
    num_boxes: usize,
    d_feature: usize,
    row_error: &dyn Fn(&str, String) -> RegionFeatureError,
) -> Result<TsvRow, RegionFeatureError> {
    let raw_id = fields[0];
    let float = |i: usize| -> Result<f32, RegionFeatureError> {
        fields[i].trim().parse().map_err(|_| {
            row_error(
                raw_id,
                format!("{} {:?} is not a number", TSV_FIELDS[i], fields[i]),
            )
        })
    };
    let (height, width) = (float(1)?, float(2)?);
    if height <= 0.0 || width <= 0.0 {
        return Err(row_error(
            raw_id,
            format!("image size {width}x{height} is not positive"),
        ));
    }
    let array = |i: usize, elem: usize, count: usize| -> Result<Vec<u8>, RegionFeatureError> {
        let bytes = decode_base64(fields[i])
            .map_err(|m| row_error(raw_id, format!("{}: {m}", TSV_FIELDS[i])))?;
        if bytes.len() != elem * count {
            return Err(row_error(
                raw_id,
                format!(
                    "{} holds {} values, but num_boxes is {num_boxes} ({count} expected)",
                    TSV_FIELDS[i],
                    bytes.len() / elem
                ),
            ));
        }
        Ok(bytes)
    };
    let ints = |b: Vec<u8>| -> Vec<i64> {
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let floats = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    Ok(TsvRow {
        image_id,
        height,
        width,
        objects: ints(array(3, 8, num_boxes)?),
        attributes: ints(array(5, 8, num_boxes)?),
        boxes: floats(array(8, 4, num_boxes * 4)?),
        features: floats(array(9, 4, num_boxes * d_feature)?),
    })
}

/// Converts LXMERT TSV feature files (e.g. `train2014_obj36.tsv` and `val2014_obj36.tsv`) into
/// one memory-mappable safetensors file at `out` (written to a temporary sibling, then renamed).
/// Two passes: the first checks every line and sizes the tensors, the second decodes and
/// writes each row in place, so memory use is one row whatever the file size.
pub fn convert_tsv(tsvs: &[PathBuf], out: &Path) -> Result<ConversionSummary, RegionFeatureError> {
    let io_in = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RegionFeatureError::Io { path, source }
    };
    let row_error = |path: &Path, line: usize| {
        let path = path.to_path_buf();
        move |raw_id: &str, message: String| RegionFeatureError::Row {
            path: path.clone(),
            line,
            image_id: raw_id.to_string(),
            message,
        }
    };
    // Every non-empty line of every file, with its file and line number.
    let each_line = |visit: &mut dyn FnMut(
        &Path,
        usize,
        &str,
    ) -> Result<(), RegionFeatureError>|
     -> Result<(), RegionFeatureError> {
        for tsv in tsvs {
            let reader = BufReader::new(File::open(tsv).map_err(io_in(tsv))?);
            for (index, line) in reader.lines().enumerate() {
                let line = line.map_err(io_in(tsv))?;
                if !line.trim().is_empty() {
                    visit(tsv, index + 1, &line)?;
                }
            }
        }
        Ok(())
    };

    // Pass 1: count, size and check every row.
    let (mut images, mut max_boxes, mut d_feature) = (0usize, 0usize, None::<usize>);
    let mut seen: HashMap<u64, (PathBuf, usize)> = HashMap::new();
    each_line(&mut |tsv, line_no, line| {
        let err = row_error(tsv, line_no);
        let (image_id, fields, num_boxes) = split_line(line, &err)?;
        if num_boxes == 0 {
            return Err(err(fields[0], "num_boxes is 0".into()));
        }
        let feature_bytes = base64_len(fields[9]);
        if !feature_bytes.is_multiple_of(4 * num_boxes) {
            return Err(err(
                fields[0],
                format!(
                    "features hold {} floats, which is not num_boxes ({num_boxes}) times a feature width",
                    feature_bytes / 4
                ),
            ));
        }
        let width = feature_bytes / 4 / num_boxes;
        match d_feature {
            None => d_feature = Some(width),
            Some(d) if d != width => {
                return Err(err(
                    fields[0],
                    format!(
                        "features hold {} floats for num_boxes {num_boxes} ({width} per box), but earlier rows have {d} per box",
                        feature_bytes / 4
                    ),
                ))
            }
            Some(_) => {}
        }
        if let Some((file, first)) = seen.insert(image_id, (tsv.to_path_buf(), line_no)) {
            return Err(err(
                fields[0],
                format!(
                    "image {image_id} appears twice (also {}, line {first})",
                    file.display()
                ),
            ));
        }
        images += 1;
        max_boxes = max_boxes.max(num_boxes);
        Ok(())
    })?;
    let d = d_feature.ok_or_else(|| RegionFeatureError::Invalid {
        path: tsvs.first().cloned().unwrap_or_default(),
        message: "no rows".into(),
    })?;

    // Layout of the output, then pass 2 writes each row at its offsets.
    let (n, m) = (images, max_boxes);
    let tensors: [(&str, Dtype, Vec<usize>, usize); 6] = [
        ("features", Dtype::F32, vec![n, m, d], 4),
        ("boxes", Dtype::F32, vec![n, m, 4], 4),
        ("objects", Dtype::I64, vec![n, m], 8),
        ("attributes", Dtype::I64, vec![n, m], 8),
        ("num_boxes", Dtype::I64, vec![n], 8),
        ("image_ids", Dtype::I64, vec![n], 8),
    ];
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({
            "format": "vislang-region-features-v1",
            "sources": tsvs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        }),
    );
    let mut starts = Vec::new();
    let mut offset = 0usize;
    for (name, dtype, shape, elem) in &tensors {
        let size = shape.iter().product::<usize>() * elem;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": format!("{dtype:?}"), "shape": shape, "data_offsets": [offset, offset + size]}),
        );
        starts.push(offset);
        offset += size;
    }
    let mut header = serde_json::to_vec(&header).expect("header serialises");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let data_start = 8 + header.len() as u64;

    let mut tmp_name = out.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = out.with_file_name(tmp_name);
    let io_out = |source| RegionFeatureError::Io {
        path: tmp.clone(),
        source,
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io_out)?;
    }
    let mut file = File::create(&tmp).map_err(io_out)?;
    file.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io_out)?;
    file.write_all(&header).map_err(io_out)?;
    file.set_len(data_start + offset as u64).map_err(io_out)?;
    let mut write_at = |tensor: usize, row_offset: usize, bytes: &[u8]| -> std::io::Result<()> {
        file.seek(SeekFrom::Start(
            data_start + (starts[tensor] + row_offset) as u64,
        ))?;
        file.write_all(bytes)
    };
    let mut row = 0usize;
    each_line(&mut |tsv, line_no, line| {
        let err = row_error(tsv, line_no);
        let (image_id, fields, num_boxes) = split_line(line, &err)?;
        let r = decode_row(fields, image_id, num_boxes, d, &err)?;
        let scale = [r.width, r.height, r.width, r.height];
        let boxes: Vec<f32> = r
            .boxes
            .iter()
            .enumerate()
            .map(|(i, v)| (v / scale[i % 4]).clamp(0.0, 1.0))
            .collect();
        let pad = |values: &[i64]| -> Vec<u8> {
            (0..m)
                .flat_map(|i| values.get(i).copied().unwrap_or(-1).to_le_bytes())
                .collect()
        };
        let le_f32 =
            |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
        (|| -> std::io::Result<()> {
            write_at(0, row * m * d * 4, &le_f32(&r.features))?;
            write_at(1, row * m * 16, &le_f32(&boxes))?;
            write_at(2, row * m * 8, &pad(&r.objects))?;
            write_at(3, row * m * 8, &pad(&r.attributes))?;
            write_at(4, row * 8, &(num_boxes as i64).to_le_bytes())?;
            write_at(5, row * 8, &(r.image_id as i64).to_le_bytes())
        })()
        .map_err(io_out)?;
        row += 1;
        Ok(())
    })?;
    file.sync_all().map_err(io_out)?;
    drop(file);
    std::fs::rename(&tmp, out).map_err(|source| RegionFeatureError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(ConversionSummary {
        images: n,
        max_boxes: m,
        d_feature: d,
    })
}

/// A converted feature file, memory-mapped; see the module documentation.
pub struct RegionFeatures {
    path: PathBuf,
    map: Mmap,
    rows: HashMap<u64, usize>,
    max_boxes: usize,
    d_feature: usize,
    /// Byte offsets of the tensors within the file.
    features: usize,
    boxes: usize,
    objects: usize,
    attributes: usize,
    num_boxes: Vec<usize>,
}

/// Region features of a batch of images, padded to the longest.
pub struct RegionBatch<B: Backend> {
    /// `[batch, max_boxes, d_feature]`
    pub features: Tensor<B, 3>,
    /// `[batch, max_boxes, 4]`
    pub boxes: Tensor<B, 3>,
    /// `[batch, max_boxes]`, `true` past each image's `num_boxes`.
    pub padding: Tensor<B, 2, Bool>,
    /// `[batch, max_boxes]`, -1 where unknown.
    pub objects: Tensor<B, 2, Int>,
    pub attributes: Tensor<B, 2, Int>,
}

impl RegionFeatures {
    /// Maps a file written by [`convert_tsv`] and checks its tensors.
    pub fn open(path: &Path) -> Result<Self, RegionFeatureError> {
        let invalid = |message: String| RegionFeatureError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|source| RegionFeatureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: read-only map of a file vislang wrote and does not modify while training.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| RegionFeatureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let tensors = SafeTensors::deserialize(&map).map_err(|e| {
            invalid(format!(
                "not a feature file from `lxmert-features convert`: {e}"
            ))
        })?;
        let base = map.as_ptr() as usize;
        let get = |name: &str, dtype: Dtype, rank: usize| {
            let view = tensors
                .tensor(name)
                .map_err(|_| invalid(format!("tensor `{name}` is missing")))?;
            if view.dtype() != dtype || view.shape().len() != rank {
                return Err(invalid(format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} of rank {rank}",
                    view.dtype(),
                    view.shape()
                )));
            }
            Ok((
                view.data().as_ptr() as usize - base,
                view.shape().to_vec(),
                view.data(),
            ))
        };
        let (features, fshape, _) = get("features", Dtype::F32, 3)?;
        let (boxes, bshape, _) = get("boxes", Dtype::F32, 3)?;
        let (objects, oshape, _) = get("objects", Dtype::I64, 2)?;
        let (attributes, ashape, _) = get("attributes", Dtype::I64, 2)?;
        let (_, nshape, num_boxes) = get("num_boxes", Dtype::I64, 1)?;
        let (_, ishape, ids) = get("image_ids", Dtype::I64, 1)?;
        let (n, m, d) = (fshape[0], fshape[1], fshape[2]);
        if bshape != [n, m, 4]
            || oshape != [n, m]
            || ashape != [n, m]
            || nshape != [n]
            || ishape != [n]
        {
            return Err(invalid(format!(
                "tensor shapes disagree: features {fshape:?}, boxes {bshape:?}, objects {oshape:?}, attributes {ashape:?}, num_boxes {nshape:?}, image_ids {ishape:?}"
            )));
        }
        let as_i64 = |b: &[u8]| -> Vec<i64> {
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let num_boxes: Vec<usize> = as_i64(num_boxes)
            .into_iter()
            .map(|v| v.clamp(0, m as i64) as usize)
            .collect();
        let rows = as_i64(ids)
            .into_iter()
            .enumerate()
            .map(|(row, id)| (id as u64, row))
            .collect();
        drop(tensors);
        Ok(Self {
            path: path.to_path_buf(),
            map,
            rows,
            max_boxes: m,
            d_feature: d,
            features,
            boxes,
            objects,
            attributes,
            num_boxes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn d_feature(&self) -> usize {
        self.d_feature
    }

    pub fn max_boxes(&self) -> usize {
        self.max_boxes
    }

    pub fn contains(&self, image_id: u64) -> bool {
        self.rows.contains_key(&image_id)
    }

    /// Fails naming the first of `image_ids` that the file lacks.
    pub fn check_covers(
        &self,
        image_ids: impl IntoIterator<Item = u64>,
    ) -> Result<(), RegionFeatureError> {
        match image_ids.into_iter().find(|id| !self.contains(*id)) {
            Some(image_id) => Err(RegionFeatureError::MissingImage {
                path: self.path.clone(),
                image_id,
            }),
            None => Ok(()),
        }
    }

    fn slice(&self, start: usize, row: usize, row_bytes: usize) -> &[u8] {
        let from = start + row * row_bytes;
        &self.map[from..from + row_bytes]
    }

    /// The regions of `image_ids` as tensors; each image is copied out of the map.
    pub fn batch<B: Backend>(
        &self,
        image_ids: &[u64],
        device: &B::Device,
    ) -> Result<RegionBatch<B>, RegionFeatureError> {
        let (m, d, n) = (self.max_boxes, self.d_feature, image_ids.len());
        let mut features = Vec::with_capacity(n * m * d);
        let mut boxes = Vec::with_capacity(n * m * 4);
        let mut objects = Vec::with_capacity(n * m);
        let mut attributes = Vec::with_capacity(n * m);
        let mut padding = Vec::with_capacity(n * m);
        let f32s = |b: &[u8]| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        let i64s = |b: &[u8]| {
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        for &id in image_ids {
            let row = *self
                .rows
                .get(&id)
                .ok_or_else(|| RegionFeatureError::MissingImage {
                    path: self.path.clone(),
                    image_id: id,
                })?;
            features.extend(f32s(self.slice(self.features, row, m * d * 4)));
            boxes.extend(f32s(self.slice(self.boxes, row, m * 16)));
            objects.extend(i64s(self.slice(self.objects, row, m * 8)));
            attributes.extend(i64s(self.slice(self.attributes, row, m * 8)));
            padding.extend((0..m).map(|i| i >= self.num_boxes[row]));
        }
        Ok(RegionBatch {
            features: Tensor::from_data(TensorData::new(features, [n, m, d]), device),
            boxes: Tensor::from_data(TensorData::new(boxes, [n, m, 4]), device),
            padding: Tensor::from_data(TensorData::new(padding, [n, m]), device),
            objects: Tensor::from_data(TensorData::new(objects, [n, m]), device),
            attributes: Tensor::from_data(TensorData::new(attributes, [n, m]), device),
        })
    }
}

/// Writes one TSV line in the LXMERT format (used by tests and by `lxmert-features synthetic`
/// to make a feature file for the built-in dataset).
pub fn tsv_line(
    img_id: &str,
    height: f32,
    width: f32,
    objects: &[i64],
    attributes: &[i64],
    boxes: &[[f32; 4]],
    features: &[f32],
) -> String {
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let ints = |v: &[i64]| b64(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    let floats = |v: &[f32]| b64(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    let confidences = vec![1.0f32; objects.len()];
    let flat_boxes: Vec<f32> = boxes.iter().flatten().copied().collect();
    format!(
        "{img_id}\t{height}\t{width}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        ints(objects),
        floats(&confidences),
        ints(attributes),
        floats(&confidences),
        boxes.len(),
        floats(&flat_boxes),
        floats(features)
    )
}

/// Width of a box feature written by [`write_box_feature_tsv`]: the box resampled to 4x4 RGB.
pub const BOX_FEATURE_WIDTH: usize = 48;

/// Writes an LXMERT-format TSV for COCO-format datasets from their annotated boxes, standing
/// in for a detector: one region per annotated object (up to 35) plus the whole image, each
/// feature the box's pixels resampled to 4x4 RGB in [0, 1], the object label its category
/// index (the whole image gets `n_categories`), the attribute its size (0 small, 1 medium,
/// 2 large). It lets the feature path run end to end on the built-in synthetic set, where no
/// Faster R-CNN features exist; with real COCO, use the LXMERT release's TSVs instead.
pub fn write_box_feature_tsv(
    datasets: &[&super::coco::CocoDataset],
    out: &Path,
) -> Result<usize, RegionFeatureError> {
    let mut tmp_name = out.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = out.with_file_name(tmp_name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RegionFeatureError::Io { path, source }
    };
    let mut writer = std::io::BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    // Rows go to a temporary file that is removed if any image fails: no half-written TSV.
    let written = (|| -> Result<usize, RegionFeatureError> {
        let mut rows = 0;
        for dataset in datasets {
            let n_categories = dataset.categories.len() as i64;
            for image in &dataset.images {
                let rgb = super::image_file::open_image(&image.path)
                    .map_err(|e| RegionFeatureError::Invalid {
                        path: image.path.clone(),
                        message: format!("image {}: {e}", image.id),
                    })?
                    .to_rgb8();
                let (w, h) = (rgb.width() as f32, rgb.height() as f32);
                let mut boxes: Vec<[f32; 4]> = Vec::new();
                let mut objects = Vec::new();
                let mut attributes = Vec::new();
                for object in image.objects.iter().take(35) {
                    let [x, y, bw, bh] = object.bbox;
                    boxes.push([x, y, x + bw, y + bh]);
                    objects.push(object.category as i64);
                    let area = bw * bh / (w * h);
                    attributes.push(if area < 0.05 {
                        0
                    } else if area < 0.2 {
                        1
                    } else {
                        2
                    });
                }
                boxes.push([0.0, 0.0, w, h]);
                objects.push(n_categories);
                attributes.push(2);
                let mut features = Vec::with_capacity(boxes.len() * BOX_FEATURE_WIDTH);
                for [x1, y1, x2, y2] in &boxes {
                    let (x, y) = (x1.max(0.0) as u32, y1.max(0.0) as u32);
                    let cw =
                        ((x2 - x1).round() as u32).clamp(1, rgb.width() - x.min(rgb.width() - 1));
                    let ch =
                        ((y2 - y1).round() as u32).clamp(1, rgb.height() - y.min(rgb.height() - 1));
                    let crop = image::imageops::crop_imm(&rgb, x, y, cw, ch).to_image();
                    let small =
                        image::imageops::resize(&crop, 4, 4, image::imageops::FilterType::Triangle);
                    features.extend(small.as_raw().iter().map(|&v| v as f32 / 255.0));
                }
                let line = tsv_line(
                    &image.id.to_string(),
                    h,
                    w,
                    &objects,
                    &attributes,
                    &boxes,
                    &features,
                );
                writer.write_all(line.as_bytes()).map_err(io(&tmp))?;
                rows += 1;
            }
        }
        writer.flush().map_err(io(&tmp))?;
        Ok(rows)
    })();
    drop(writer);
    let rows = match written {
        Ok(rows) => rows,
        Err(error) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
    };
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(rows)
}
