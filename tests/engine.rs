//! The training engine on a tiny linear-regression task: it learns, it stops on an injected
//! non-finite training or held-out loss leaving a directory that resumes, it writes
//! `metrics.jsonl` without duplicate steps, and it refuses a changed config naming each field.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::{Autodiff, Flex};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData};
use indicatif::MultiProgress;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use vislang::nn::{Backend, Precision};
use vislang::train::engine::data_parallel::first_difference;
use vislang::train::engine::{
    seeded_init, train, train_on, EpochEvaluation, Feed, Losses, RunDisplay, StepOutput, StepTimer,
    TrainingTask,
};
use vislang::train::workloads::DalleWorkload;
use vislang::train::{Budget, RunDir, TrainError};

type B = Autodiff<Flex>;

/// y = x . [1, -2, 3, 0.5] on 64 fixed points.
struct Regression {
    xs: Vec<f32>,
    ys: Vec<f32>,
    /// Training steps taken (across epochs); the loss becomes NaN at step `nan_at_step`.
    steps: AtomicUsize,
    nan_at_step: Option<usize>,
    nan_eval_at_epoch: Option<usize>,
}

impl Regression {
    fn new(nan_at_step: Option<usize>, nan_eval_at_epoch: Option<usize>) -> Self {
        let xs: Vec<f32> = (0..64 * 4)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let ys = xs
            .chunks(4)
            .map(|x| x[0] - 2.0 * x[1] + 3.0 * x[2] + 0.5 * x[3])
            .collect();
        Self {
            xs,
            ys,
            steps: AtomicUsize::new(0),
            nan_at_step,
            nan_eval_at_epoch,
        }
    }

    fn mse<Bk: Backend>(
        &self,
        model: &Linear<Bk>,
        indices: &[usize],
        device: &Bk::Device,
    ) -> Tensor<Bk, 1> {
        let x: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.xs[4 * i..4 * i + 4].to_vec())
            .collect();
        let y: Vec<f32> = indices.iter().map(|&i| self.ys[i]).collect();
        let x = Tensor::<Bk, 2>::from_data(TensorData::new(x, [indices.len(), 4]), device);
        let y = Tensor::<Bk, 2>::from_data(TensorData::new(y, [indices.len(), 1]), device);
        (model.forward(x) - y).powi_scalar(2).mean()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HeldOut {
    loss: f64,
}

impl EpochEvaluation for HeldOut {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("loss", self.loss)]
    }
}

impl TrainingTask<B> for Regression {
    type Model = Linear<B>;
    type Aux = ();
    type Evaluation = HeldOut;

    fn n_train(&self) -> usize {
        64
    }

    fn uses_backend_random(&self) -> bool {
        false
    }

    type Batch = (Vec<usize>, burn::backend::flex::FlexDevice);

    fn batch(
        &self,
        indices: &[usize],
        _rng: &mut StdRng,
        device: &burn::backend::flex::FlexDevice,
    ) -> Result<Self::Batch, TrainError> {
        Ok((indices.to_vec(), *device))
    }

    fn loss(
        &self,
        model: &Linear<B>,
        (indices, device): Self::Batch,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let step = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        let mut loss = self.mse(model, &indices, &device);
        if self.nan_at_step == Some(step) {
            loss = loss * f32::NAN;
        }
        Ok(StepOutput {
            losses: Losses {
                total: loss.clone(),
                parts: vec![("mse", loss)],
            },
            aux: (),
        })
    }

    fn evaluate(
        &self,
        model: &Linear<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>,
        epoch: usize,
        device: &burn::backend::flex::FlexDevice,
    ) -> Result<HeldOut, TrainError> {
        let all: Vec<usize> = (0..64).collect();
        let loss = self.mse(model, &all, device).into_scalar() as f64;
        let loss = if self.nan_eval_at_epoch == Some(epoch) {
            f64::NAN
        } else {
            loss
        };
        Ok(HeldOut { loss })
    }
}

fn budget() -> Budget {
    Budget {
        epochs: 4,
        batch_size: 8,
        learning_rate: 0.3,
        weight_decay: 0.0,
        warmup_fraction: 0.0,
        final_lr_ratio: 0.1,
        grad_clip: Some(10.0),
        seed: 7,
        precision: Precision::F32,
    }
}

fn run(task: &Regression, dir: &Path) -> Result<Vec<f64>, TrainError> {
    run_fed(task, dir, 2)
}

fn run_fed(task: &Regression, dir: &Path, loader_threads: usize) -> Result<Vec<f64>, TrainError> {
    let device = Default::default();
    let run_dir = RunDir::claim(dir, &budget(), &[])?;
    let model = seeded_init::<B, _>(7, &device, || LinearConfig::new(4, 1).init(&device));
    let progress = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    let display = RunDisplay {
        name: "regression".into(),
        progress: &progress,
        feed: Feed {
            log_every: 3,
            loader_threads,
            ..Feed::default()
        },
    };
    let trained = train(task, model, &budget(), &run_dir, &display, &device)?;
    run_dir.finish(&serde_json::json!({ "epochs": trained.history.len() }))?;
    Ok(trained.history.iter().map(|h| h.eval.loss).collect())
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every metrics line is JSON"))
        .collect()
}

#[test]
fn learns_and_logs_every_step() {
    let dir = common::tempdir();
    let losses = run(&Regression::new(None, None), dir.path()).unwrap();
    // Measured 0.64, 0.38, 0.30, 0.17: falling every epoch, and the last under half the first.
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]) && losses[3] < 0.5 * losses[0],
        "held-out MSE per epoch: {losses:?}"
    );
    let metrics = lines(&dir.path().join("metrics.jsonl"));
    let steps: Vec<u64> = metrics
        .iter()
        .filter(|m| m["kind"] == "step")
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=32).collect::<Vec<u64>>());
    assert_eq!(metrics.iter().filter(|m| m["kind"] == "eval").count(), 4);
    assert!(metrics[0]["losses"]["mse"].as_f64().unwrap().is_finite());
    // A clean finish leaves only the final artifacts.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["config.json", "metrics.jsonl", "result.json"]);
}

#[test]
fn the_batch_loader_does_not_change_the_run() {
    // Batches made inside the loop (0 loader threads) or on 1 or 3 threads ahead of the step
    // are the same batches, in the same order: the same weights' held-out losses and the
    // same logged step losses.
    let step_losses = |dir: &Path| -> Vec<f64> {
        lines(&dir.join("metrics.jsonl"))
            .iter()
            .filter(|m| m["kind"] == "step")
            .map(|m| m["losses"]["mse"].as_f64().unwrap())
            .collect()
    };
    let (inline, one, three) = (common::tempdir(), common::tempdir(), common::tempdir());
    let held_out_one = run_fed(&Regression::new(None, None), one.path(), 1).unwrap();
    for (dir, threads) in [(&inline, 0), (&three, 3)] {
        let held_out = run_fed(&Regression::new(None, None), dir.path(), threads).unwrap();
        assert_eq!(held_out, held_out_one, "{threads} loader threads");
        assert_eq!(step_losses(dir.path()), step_losses(one.path()));
    }
    // Each epoch logs the time it waited for batches (inline: the time spent making them).
    for dir in [&inline, &one] {
        for m in lines(&dir.path().join("metrics.jsonl")) {
            if m["kind"] == "eval" {
                let wait = m["data_wait_seconds"].as_f64().expect("data_wait_seconds");
                let train = m["train_seconds"].as_f64().unwrap();
                assert!((0.0..=train).contains(&wait), "{m}");
            }
        }
    }
}

#[test]
fn compute_threads_do_not_change_the_weights() {
    // A real model whose matrix products and row kernels are large enough to be split across
    // threads (the bench's DALL-E decoder, 16 sequences of 88 positions): 1, 2 and 3 compute
    // threads take three steps to the same bits.
    let device = Default::default();
    let workload = DalleWorkload::new(24, 16);
    let task = workload.task::<Flex>();
    let init = || seeded_init::<B, _>(3, &device, || workload.config.init(&device));
    let stepped = |threads: usize| {
        let timer = StepTimer::new(&task, init(), &workload.budget, &device).unwrap();
        let mut timer = timer.with_threads(threads).unwrap();
        timer.examples_per_second(3).unwrap();
        timer.into_model()
    };
    let one = stepped(1);
    assert!(
        first_difference(&one, &init()).is_some(),
        "the steps moved the weights"
    );
    for threads in [2, 3] {
        assert_eq!(
            first_difference(&one, &stepped(threads)),
            None,
            "{threads} threads"
        );
    }
}

#[test]
fn identical_runs_give_identical_numbers() {
    let (a, b) = (common::tempdir(), common::tempdir());
    let first = run(&Regression::new(None, None), a.path()).unwrap();
    let second = run(&Regression::new(None, None), b.path()).unwrap();
    assert_eq!(first, second);
}

/// Stops on `task`'s injected NaN in epoch 3, then resumes without it; returns the error.
fn stop_then_resume(task: Regression) -> String {
    let dir = common::tempdir();
    let error = run(&task, dir.path()).expect_err("a non-finite value stops the run");
    let message = error.to_string();
    // The run directory holds epoch 2, readable and resumable; nothing of epoch 3 was kept.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 2);
    assert!(dir.path().join("checkpoint-epoch2.safetensors").exists());
    assert!(!dir.path().join("checkpoint-epoch3.safetensors").exists());
    assert!(!dir.path().join("result.json").exists());
    let stopped = std::fs::read_to_string(dir.path().join("stopped.json"))
        .expect("a non-finite stop is recorded, so that a lower --lr may continue");
    assert!(stopped.contains("became NaN"), "{stopped}");

    let reference = run(&Regression::new(None, None), common::tempdir().path()).unwrap();
    let resumed = run(&Regression::new(None, None), dir.path()).unwrap();
    assert_eq!(resumed, reference, "resuming gives the uninterrupted run");
    assert!(
        !dir.path().join("stopped.json").exists(),
        "a committed epoch clears the stop"
    );
    let steps: Vec<u64> = lines(&dir.path().join("metrics.jsonl"))
        .iter()
        .filter(|m| m["kind"] == "step")
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=32).collect::<Vec<u64>>(),
        "no step logged twice"
    );
    message
}

#[test]
fn a_non_finite_training_loss_stops_before_the_epoch_is_committed() {
    // Step 20 is in epoch 3 (8 steps per epoch).
    let message = stop_then_resume(Regression::new(Some(20), None));
    assert!(
        message.contains("regression: the training loss (mse) became NaN at step 20 (epoch 3)"),
        "{message}"
    );
}

#[test]
fn a_non_finite_held_out_loss_stops_before_the_epoch_is_committed() {
    let message = stop_then_resume(Regression::new(None, Some(3)));
    assert!(
        message.contains("regression: the held-out loss became NaN at step 24 (epoch 3)"),
        "{message}"
    );
}

#[test]
fn a_changed_config_names_every_differing_field() {
    let dir = common::tempdir();
    let first = budget();
    RunDir::claim(dir.path(), &first, &[]).unwrap();
    // Nothing was committed yet: a corrected command takes the directory over.
    let corrected = Budget {
        batch_size: 16,
        ..budget()
    };
    RunDir::claim(dir.path(), &corrected, &[]).expect("an unstarted run does not block");

    std::fs::write(dir.path().join("state.json"), "{}").unwrap();
    let changed = Budget {
        epochs: 5,
        learning_rate: 0.01,
        ..corrected.clone()
    };
    let message = RunDir::claim(dir.path(), &changed, &[])
        .err()
        .expect("a started run with another config is refused")
        .to_string();
    assert!(message.contains("epochs: 4 there, 5 here"), "{message}");
    assert!(
        message.contains("learning_rate: 0.3 there, 0.01 here"),
        "{message}"
    );
    assert!(!message.contains("batch_size"), "{message}");

    // A finished run asked for more epochs says how to get a longer run.
    std::fs::write(dir.path().join("result.json"), "{}").unwrap();
    let longer = Budget {
        epochs: 8,
        ..corrected
    };
    let message = RunDir::claim(dir.path(), &longer, &[])
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("cannot be extended"), "{message}");
}

/// Trains the regression for `epochs` on `replicas` CPU replicas (threads), each taking a
/// shard of every batch; returns the final weights and bias, and the logged training losses.
fn train_replicas(dir: &Path, replicas: usize, epochs: usize) -> (Vec<f32>, Vec<f64>) {
    let device: burn::backend::flex::FlexDevice = Default::default();
    let budget = Budget { epochs, ..budget() };
    let run_dir = RunDir::claim(dir, &budget, &[]).unwrap();
    let model = seeded_init::<B, _>(7, &device, || LinearConfig::new(4, 1).init(&device));
    let progress = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    let display = RunDisplay {
        name: format!("regression x{replicas}"),
        progress: &progress,
        feed: Feed {
            log_every: 1,
            loader_threads: 1,
            ..Feed::default()
        },
    };
    let devices = vec![device; replicas];
    let trained = train_on(
        &Regression::new(None, None),
        model,
        &budget,
        &run_dir,
        &display,
        &devices,
    )
    .unwrap();
    let mut weights: Vec<f32> = trained.model.weight.val().into_data().to_vec().unwrap();
    weights.extend(
        trained
            .model
            .bias
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
    );
    let losses: Vec<f64> = lines(&dir.join("metrics.jsonl"))
        .iter()
        .filter_map(|line| line["losses"]["mse"].as_f64())
        .collect();
    (weights, losses)
}

/// N replicas on N shards take the steps of one device on the whole batch: batch 8 in 2
/// shards of 4 and in 3 uneven shards (3, 3, 2), gradients summed by Burn's collective
/// engine with each shard weighted by its share. Tolerance 1e-5 (float sums in another
/// order); the engine itself fails a run whose replicas end with weights that differ at all.
#[test]
fn data_parallel_replicas_take_the_steps_of_one_device() {
    let dir = common::tempdir();
    let (one, one_losses) = train_replicas(&dir.path().join("one"), 1, 2);
    for replicas in [2, 3] {
        let (many, many_losses) =
            train_replicas(&dir.path().join(format!("x{replicas}")), replicas, 2);
        for (a, b) in one.iter().zip(&many) {
            assert!(
                (a - b).abs() <= 1e-5,
                "{replicas} replicas: {many:?} vs {one:?}"
            );
        }
        // The logged loss is the whole batch's, not replica 0's shard's.
        assert_eq!(one_losses.len(), 16);
        assert_eq!(one_losses.len(), many_losses.len());
        for (a, b) in one_losses.iter().zip(&many_losses) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
    // The steps moved the weights towards [1, -2, 3, 0.5] (initialised within 1 of 0).
    assert!(one[1] < -1.5 && one[2] > 1.5, "{one:?}");
}
