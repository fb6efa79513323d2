//! The engine's per-step losses: kept on the device, read every `log_every` steps in one
//! synchronisation, checked for non-finite values, appended to `metrics.jsonl` and summed.

use crate::nn::Backend;
use burn::tensor::Tensor;

use crate::train::engine::epoch_log::LossMeans;
use crate::train::engine::metrics_log::MetricsLog;
use crate::train::TrainError;

/// The loss of one batch: the total that is optimised and its named parts, each `[1]`.
pub struct Losses<B: Backend> {
    pub total: Tensor<B, 1>,
    pub parts: Vec<(&'static str, Tensor<B, 1>)>,
}

/// What one step's forward pass produced: its losses, and whatever the task's post-step hook
/// needs (the VQ-VAE's encoder outputs and codes; `()` for the others).
pub struct StepOutput<B: Backend, Aux> {
    pub losses: Losses<B>,
    pub aux: Aux,
}

/// Per-step losses still on the device, read in one sync by [`PendingSteps::flush`].
#[derive(Default)]
pub(super) struct PendingSteps<B: Backend> {
    losses: Vec<Tensor<B, 1>>,
    names: Vec<&'static str>,
    /// `(global step, learning rate, host seconds)` per pending step.
    steps: Vec<(usize, f64, f64)>,
}

impl<B: Backend> PendingSteps<B> {
    pub(super) fn len(&self) -> usize {
        self.steps.len()
    }

    pub(super) fn push(&mut self, losses: Losses<B>, step: usize, lr: f64, seconds: f64) {
        self.names = losses.parts.iter().map(|(name, _)| *name).collect();
        let values: Vec<Tensor<B, 1>> = std::iter::once(losses.total)
            .chain(losses.parts.into_iter().map(|(_, value)| value))
            .collect();
        self.losses.push(Tensor::cat(values, 0));
        self.steps.push((step, lr, seconds));
    }

    /// Reads the pending losses, stops at the first non-finite one, and logs each step.
    pub(super) fn flush(
        &mut self,
        sums: &mut LossSums,
        metrics: &mut MetricsLog,
        run: &str,
        epoch: usize,
    ) -> Result<(), TrainError> {
        if self.losses.is_empty() {
            return Ok(());
        }
        let values: Vec<f64> = Tensor::cat(std::mem::take(&mut self.losses), 0)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("f64 data");
        let width = self.names.len() + 1;
        for ((step, lr, seconds), row) in self.steps.drain(..).zip(values.chunks(width)) {
            let named: Vec<(&str, f64)> = std::iter::once(("total", row[0]))
                .chain(self.names.iter().copied().zip(row[1..].iter().copied()))
                .collect();
            // A part names the objective more precisely than the total it feeds.
            let bad = named[1..]
                .iter()
                .chain(&named[..1])
                .find(|(_, value)| !value.is_finite());
            if let Some((objective, value)) = bad {
                let objective = match *objective {
                    "total" => "training loss".to_string(),
                    part => format!("training loss ({part})"),
                };
                return Err(TrainError::NonFinite {
                    run: run.to_string(),
                    epoch,
                    step,
                    objective,
                    value: *value,
                });
            }
            metrics.step(epoch, step, lr, seconds, &named)?;
            sums.add(&named);
        }
        Ok(())
    }
}

/// Host-side sums of the per-step losses of an epoch.
#[derive(Default)]
pub(super) struct LossSums {
    sums: Vec<(String, f64)>,
    steps: usize,
}

impl LossSums {
    fn add(&mut self, named: &[(&str, f64)]) {
        if self.sums.is_empty() {
            self.sums = named.iter().map(|(n, _)| (n.to_string(), 0.0)).collect();
        }
        for ((_, sum), (_, value)) in self.sums.iter_mut().zip(named) {
            *sum += value;
        }
        self.steps += 1;
    }

    pub(super) fn means(self) -> LossMeans {
        let n = self.steps.max(1) as f64;
        LossMeans(
            self.sums
                .into_iter()
                .map(|(name, sum)| (name, sum / n))
                .collect(),
        )
    }
}
