//! LXMERT out of vislang: a pretraining run, or any Hugging Face LXMERT checkpoint, written as
//! a Hugging Face model folder that `LxmertForPreTraining.from_pretrained` loads
//! (`config.json`, `model.safetensors`, `tokenizer.json` and `vocab.txt`).
//!
//! Hugging Face's LXMERT reads region features; a model that reads pixels keeps its patch
//! encoder in `vislang-patch-encoder.safetensors` beside them (vislang's own names), and its
//! masked-object head, which predicts patch colours rather than features, is left out.

use std::path::{Path, PathBuf};

use super::{read_artifact_json, ArtifactError};
use crate::data::TextTokenizer;
use crate::io::checkpoint::{load_safetensors, save_safetensors, write_atomic};
use crate::models::lxmert::hf::{export_pretraining, load_lxmert_pretraining, PATCH_ENCODER_FILE};
use crate::models::lxmert::hf_folder::{HfLxmertConfig, HfLxmertFiles};
use crate::models::lxmert::{LxmertPretraining, LxmertPretrainingConfig};
use crate::nn::{Backend, HfWeightsError};

/// What was written.
pub struct ExportSummary {
    pub tensors: usize,
    pub files: Vec<PathBuf>,
    /// Parts of the model with no place in Hugging Face's LXMERT.
    pub left_out: Vec<String>,
}

/// Exports the finished `pretrain-lxmert` run in `run_dir` to the new folder `out`.
pub fn export_run<B: Backend>(
    run_dir: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<ExportSummary, ArtifactError> {
    check_new_folder(out)?;
    let config: LxmertPretrainingConfig = read_artifact_json(
        &run_dir.join("pretraining-config.json"),
        "pretrain-lxmert",
        "--run",
    )?;
    let weights = run_dir.join("pretraining.safetensors");
    let tokenizer = run_dir.join("tokenizer.json");
    for path in [&weights, &tokenizer] {
        if !path.is_file() {
            return Err(ArtifactError::NotTrained {
                path: path.clone(),
                made_by: "pretrain-lxmert",
                flag: "--run",
            });
        }
    }
    let model: LxmertPretraining<B> = load_safetensors(config.init(device), &weights)?;
    let tokenizer = TextTokenizer::from_file(&tokenizer)?;
    write_folder(&model, &config, &tokenizer, out)
}

/// Rewrites the Hugging Face checkpoint `source` (a model folder, or a weights file with
/// `config.json` beside it; PyTorch or safetensors) as a folder with `model.safetensors`.
pub fn export_checkpoint<B: Backend>(
    source: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<ExportSummary, ArtifactError> {
    check_new_folder(out)?;
    let mismatch = |e: String| ArtifactError::Mismatch(e);
    let mut files = HfLxmertFiles::locate(source).map_err(|e| mismatch(e.to_string()))?;
    if files.config.is_none() {
        let weights = files.weights.clone();
        let folder = source.parent().unwrap_or(source);
        files = HfLxmertFiles::locate(folder).map_err(|e| mismatch(e.to_string()))?;
        files.weights = weights;
    }
    let hf = HfLxmertConfig::read(files.config.as_ref().expect("located with a config"))
        .map_err(|e| mismatch(e.to_string()))?;
    let vocabulary = files.vocabulary.as_ref().ok_or_else(|| {
        mismatch(format!(
            "{} has no vocab.txt or tokenizer.json",
            source.display()
        ))
    })?;
    let tokenizer = TextTokenizer::from_file(vocabulary)?;
    let config = LxmertPretrainingConfig::new(hf.lxmert_config(), hf.visual_feat_dim)
        .with_n_object_labels(Some(hf.num_object_labels))
        .with_n_attribute_labels(Some(hf.num_attr_labels));
    let load = load_lxmert_pretraining::<B>(config.init(device), &files.weights)
        .map_err(|e: HfWeightsError| mismatch(e.to_string()))?;
    write_folder(&load.model, &config, &tokenizer, out)
}

/// `out` must not hold anything: an export never overwrites.
fn check_new_folder(out: &Path) -> Result<(), ArtifactError> {
    let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || out.is_file() {
        return Err(ArtifactError::Output(format!(
            "{} already exists and is not empty; export-lxmert writes a new folder and never overwrites",
            out.display()
        )));
    }
    Ok(())
}

/// Writes every file into a temporary folder beside `out`, then renames it: a failed export
/// leaves no half-written folder.
fn write_folder<B: Backend>(
    model: &LxmertPretraining<B>,
    config: &LxmertPretrainingConfig,
    tokenizer: &TextTokenizer,
    out: &Path,
) -> Result<ExportSummary, ArtifactError> {
    let pixels = model.lxmert.patch_encoder.is_some();
    let object_head = !pixels;
    let hf = HfLxmertConfig::from_lxmert(
        &config.lxmert,
        object_head,
        config.n_object_labels,
        config.n_attribute_labels,
    );
    let export = export_pretraining(model, object_head);
    let staging = out.with_extension("partial");
    let output = |e: std::io::Error| {
        ArtifactError::Output(format!("cannot write {}: {e}", staging.display()))
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(output)?;
    }
    std::fs::create_dir_all(&staging).map_err(output)?;
    let result = (|| {
        export.save(&staging.join("model.safetensors"))?;
        write_atomic(
            &staging.join("config.json"),
            &serde_json::to_vec_pretty(&hf).expect("config serialises"),
        )?;
        tokenizer.save(&staging.join("tokenizer.json"))?;
        let mut left_out = Vec::new();
        if model.contrastive_head.is_some() {
            left_out.push(
                "contrastive_head (vislang's addition; LxmertForPreTraining has no place for it)"
                    .to_string(),
            );
        }
        if let Some(tokens) = tokenizer.tokens_by_id() {
            write_atomic(
                &staging.join("vocab.txt"),
                (tokens.join("\n") + "\n").as_bytes(),
            )?;
        }
        if let Some(patch_encoder) = &model.lxmert.patch_encoder {
            save_safetensors(patch_encoder, &staging.join(PATCH_ENCODER_FILE))?;
            left_out.push("object_head (predicts patch colours, not region features)".into());
        }
        Ok::<_, ArtifactError>(left_out)
    })();
    let left_out = match result {
        Ok(left_out) => left_out,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        // An empty folder (checked above) gives way to the finished one.
        std::fs::remove_dir(out).map_err(output)?;
    }
    std::fs::rename(&staging, out).map_err(output)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(output)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    Ok(ExportSummary {
        tensors: export.names().count(),
        files,
        left_out,
    })
}
