//! A pretraining run as a sequence of stages ([`PretrainStage`]): each an engine run with its
//! own objectives and learning-rate schedule, starting from the encoder the stage before
//! trained, with fresh heads. One stage trains in the run's directory itself; several train in
//! `stage-<k>/` under it, and the last one's model files are copied up, with the whole history.

use std::path::{Path, PathBuf};

use indicatif::MultiProgress;

use crate::data::PreparedData;
use crate::io::checkpoint::{load_safetensors, read, save_safetensors, write_atomic};
use crate::models::lxmert::hf::load_lxmert_pretraining;
use crate::models::lxmert::LxmertPretraining;
use crate::nn::AutodiffBackend;
use crate::train::engine::run_dir::RunDir;
use crate::train::engine::{seeded_init, train_on, Feed, RunDisplay};
use crate::train::lxmert_pretrain::config::{PretrainLxmertConfig, PretrainStage};
use crate::train::lxmert_pretrain::evaluation::write_curves;
use crate::train::lxmert_pretrain::task::{
    label_counts, PretrainError, PretrainResult, PretrainTask, PretrainingImages,
};
use crate::train::report::training_report;

/// Files of a finished stage that are also the finished run's: the encoder, the model with
/// its heads, and their configs.
const MODEL_FILES: [&str; 4] = [
    "lxmert.safetensors",
    "lxmert-config.json",
    "pretraining.safetensors",
    "pretraining-config.json",
];

/// What every stage of one pretraining shares.
pub(super) struct StagedPretraining<'a, B: AutodiffBackend> {
    pub config: &'a PretrainLxmertConfig,
    pub data: &'a PreparedData,
    pub images: PretrainingImages<'a>,
    pub devices: &'a [B::Device],
    pub multi: &'a MultiProgress,
    pub feed: Feed,
}

/// Where a stage's encoder starts.
enum StartFrom<'a> {
    /// The seeded initialisation.
    Fresh,
    /// Released (Hugging Face layout) weights.
    Released(&'a Path),
    /// A previous stage's `lxmert.safetensors`.
    Stage(PathBuf),
}

impl<B: AutodiffBackend> StagedPretraining<'_, B> {
    /// Pretrains into `out_dir`, resuming a partial run there (and inside whichever stage was
    /// running).
    pub fn run(&self, out_dir: &Path) -> Result<PretrainResult, PretrainError> {
        let run_dir = RunDir::new(out_dir)?;
        if let Some(result) = run_dir.finished()? {
            return Ok(result);
        }
        let stages = &self.config.stages;
        if stages.is_empty() {
            return Err(PretrainError::Config(
                "the pretraining has no stages".into(),
            ));
        }
        for (k, stage) in stages.iter().enumerate() {
            if !stage.objectives.any() {
                return Err(PretrainError::Config(format!(
                    "stage {} has no objective; give it at least one of masked-lm, masked-objects, matching and contrastive",
                    k + 1
                )));
            }
        }
        let released = match &self.config.weights {
            Some(weights) => StartFrom::Released(weights),
            None => StartFrom::Fresh,
        };
        let result = match stages.as_slice() {
            [stage] => self.stage(*stage, "lxmert pretraining".into(), released, out_dir)?,
            _ => self.stages(out_dir, released)?,
        };
        run_dir.finish(&result)?;
        Ok(result)
    }

    /// Every stage in `out_dir/stage-<k>/`, then the last one's model, the whole history, its
    /// curves and report in `out_dir`.
    fn stages(&self, out_dir: &Path, first: StartFrom) -> Result<PretrainResult, PretrainError> {
        let stages = &self.config.stages;
        let mut results = Vec::with_capacity(stages.len());
        let mut start = first;
        let mut stage_dir = PathBuf::new();
        for (k, stage) in stages.iter().enumerate() {
            stage_dir = out_dir.join(format!("stage-{}", k + 1));
            let stage_run = RunDir::new(&stage_dir)?;
            let result = match stage_run.finished()? {
                Some(result) => result,
                None => {
                    let name = format!("lxmert stage {}/{} {stage}", k + 1, stages.len());
                    let result = self.stage(*stage, name, start, &stage_dir)?;
                    stage_run.finish(&result)?;
                    result
                }
            };
            results.push(result);
            start = StartFrom::Stage(stage_dir.join("lxmert.safetensors"));
        }
        for name in MODEL_FILES {
            write_atomic(&out_dir.join(name), &read(&stage_dir.join(name))?)?;
        }
        let result = joined(stages, results);
        write_curves(out_dir, &result.history)?;
        training_report(
            "LXMERT pretraining",
            out_dir,
            self.config,
            &result.history,
            None,
        )?;
        Ok(result)
    }

    /// One stage in `out_dir`: the model seeded from the budget's seed, its encoder then
    /// loaded from `start`, trained with the stage's objectives for its epochs, and written out
    /// with curves and report (not `result.json`: the caller finishes the directory).
    fn stage(
        &self,
        stage: PretrainStage,
        name: String,
        start: StartFrom,
        out_dir: &Path,
    ) -> Result<PretrainResult, PretrainError> {
        let (config, data, device) = (self.config, self.data, &self.devices[0]);
        let run_dir = RunDir::new(out_dir)?;
        let objectives = stage.objectives;
        let vocab_size = data.tokenizer.vocab_size();
        let model_config = match self.images {
            PretrainingImages::Pixels => {
                config.model_config(objectives, vocab_size, None, None, None)
            }
            PretrainingImages::Regions(features) => {
                let (objects, attributes) = label_counts(features, &data.train);
                config.model_config(
                    objectives,
                    vocab_size,
                    Some(features),
                    Some(objects),
                    Some(attributes),
                )
            }
        };
        let task = PretrainTask::new(
            config,
            objectives,
            &model_config,
            data,
            self.images,
            out_dir,
        );
        let mut model: LxmertPretraining<B> =
            seeded_init::<B, _>(config.budget.seed, device, || model_config.init(device));
        match start {
            StartFrom::Fresh => {}
            StartFrom::Released(weights) => {
                if vocab_size != model_config.lxmert.vocab_size {
                    return Err(PretrainError::Config(format!(
                        "the tokenizer has {vocab_size} entries but {} was trained with {}: give the checkpoint's vocabulary (its folder's vocab.txt or tokenizer.json) as --tokenizer",
                        weights.display(),
                        model_config.lxmert.vocab_size
                    )));
                }
                let load = load_lxmert_pretraining(model, weights)?;
                eprintln!("{}", load.summary(weights));
                model = load.model;
            }
            StartFrom::Stage(encoder) => {
                model.lxmert = load_safetensors(model.lxmert, &encoder)?;
            }
        }
        let display = RunDisplay {
            name,
            progress: self.multi,
            feed: self.feed,
        };
        let budget = config.stage_budget(&stage);
        let trained = train_on(&task, model, &budget, &run_dir, &display, self.devices)?;
        let result = PretrainResult {
            n_params: trained.n_params,
            train_images: data.train.len(),
            val_images: data.val.len(),
            samples_per_second: trained.samples_per_second(data.train.len()),
            history: trained.history,
            stages: vec![stage.to_string()],
        };
        let model = trained.model;
        save_safetensors(&model.lxmert, &out_dir.join("lxmert.safetensors"))?;
        write_atomic(
            &out_dir.join("lxmert-config.json"),
            &serde_json::to_vec_pretty(&model_config.lxmert).expect("config serialises"),
        )?;
        save_safetensors(&model, &out_dir.join("pretraining.safetensors"))?;
        write_atomic(
            &out_dir.join("pretraining-config.json"),
            &serde_json::to_vec_pretty(&model_config).expect("config serialises"),
        )?;
        training_report("LXMERT pretraining", out_dir, config, &result.history, None)?;
        Ok(result)
    }
}

/// The stages' results as one run: epochs and steps numbered on through the stages, the
/// samples/s of all of them together.
fn joined(stages: &[PretrainStage], results: Vec<PretrainResult>) -> PretrainResult {
    let last = results.last().expect("at least one stage");
    let (n_params, train_images, val_images) = (last.n_params, last.train_images, last.val_images);
    let (mut history, mut epochs, mut steps, mut seconds) = (Vec::new(), 0, 0, 0.0);
    for result in results {
        let (stage_epochs, stage_steps) =
            result.history.last().map_or((0, 0), |h| (h.epoch, h.steps));
        for mut log in result.history {
            seconds += log.train_seconds;
            log.epoch += epochs;
            log.steps += steps;
            history.push(log);
        }
        epochs += stage_epochs;
        steps += stage_steps;
    }
    PretrainResult {
        n_params,
        train_images,
        val_images,
        samples_per_second: (epochs * train_images) as f64 / seconds.max(f64::MIN_POSITIVE),
        history,
        stages: stages.iter().map(|s| s.to_string()).collect(),
    }
}
