//! What one epoch of any family leaves in `state.json`, `result.json` and `metrics.jsonl`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Held-out numbers of one epoch, in the order they are shown. Each must be finite.
pub trait EpochEvaluation: Clone + Send + Serialize + DeserializeOwned {
    fn metrics(&self) -> Vec<(&'static str, f64)>;

    /// The metrics that move continuously with the model's outputs (losses, PSNR), as
    /// opposed to counts, ranks and thresholds (accuracy, mAP, F1, codes used), which a
    /// rounding difference can flip by one example's worth. What two backends' evaluations of
    /// one set of weights are compared on ([`crate::train::device_check`]).
    fn continuous_metrics(&self) -> Vec<(&'static str, f64)> {
        self.metrics()
    }

    /// The metrics as `name value, name value`, each with `decimals` decimals.
    fn metrics_text(&self, decimals: usize) -> String {
        metrics_text(&self.metrics(), decimals)
    }
}

/// `metrics` as `name value, name value`, each with `decimals` decimals.
fn metrics_text<S: AsRef<str>>(metrics: &[(S, f64)], decimals: usize) -> String {
    let named: Vec<String> = metrics
        .iter()
        .map(|(name, value)| format!("{} {value:.decimals$}", name.as_ref()))
        .collect();
    named.join(", ")
}

/// Mean training losses of an epoch, by name ("total" first), kept in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossMeans(pub Vec<(String, f64)>);

impl LossMeans {
    /// The mean of the part called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl Serialize for LossMeans {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LossMeans {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = LossMeans;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of loss names to numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LossMeans, A::Error> {
                let mut parts = Vec::new();
                while let Some(entry) = map.next_entry::<String, f64>()? {
                    parts.push(entry);
                }
                Ok(LossMeans(parts))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// One epoch of any family: its training losses and the family's held-out evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog<E> {
    pub epoch: usize,
    /// Optimisation steps done after this epoch.
    pub steps: usize,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f64,
    pub train: LossMeans,
    pub eval: E,
    pub train_seconds: f64,
    /// Of `train_seconds`, the time the training loop waited for batches not yet made
    /// ([`crate::train::engine::batch_loader`]). Logs written before it existed did not measure it.
    #[serde(default)]
    pub data_wait_seconds: f64,
    pub samples_per_second: f64,
}

impl<E: EpochEvaluation> EpochLog<E> {
    /// One line: training losses, held-out metrics, time.
    pub fn summary(&self) -> String {
        format!(
            "train {}; held-out {} ({:.1}s, {:.2}s waiting for data, {:.0} samples/s)",
            metrics_text(&self.train.0, 4),
            self.eval.metrics_text(4),
            self.train_seconds,
            self.data_wait_seconds,
            self.samples_per_second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_means_keep_their_order_through_json() {
        let means = LossMeans(vec![
            ("total".into(), 0.1 + 0.2),
            ("b".into(), 1e-300),
            ("a".into(), 3.0),
        ]);
        let json = serde_json::to_string(&means).unwrap();
        assert_eq!(serde_json::from_str::<LossMeans>(&json).unwrap(), means);
    }
}
