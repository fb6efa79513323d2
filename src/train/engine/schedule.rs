//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to `peak * final_ratio`
/// at `total_steps` (the schedule of BERT-style fine-tuning, with a cosine tail).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub final_ratio: f64,
}

impl WarmupCosine {
    /// Warm-up over `warmup_fraction` of `total_steps` (at least one step).
    pub fn new(peak: f64, total_steps: usize, warmup_fraction: f64, final_ratio: f64) -> Self {
        Self {
            peak,
            warmup_steps: ((total_steps as f64 * warmup_fraction) as usize).max(1),
            total_steps,
            final_ratio,
        }
    }

    /// The learning rate for optimisation step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        let s = WarmupCosine {
            peak: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            final_ratio: 0.1,
        };
        assert!((s.at(0) - 1e-4).abs() < 1e-12);
        assert!((s.at(9) - 1e-3).abs() < 1e-12);
        assert!((s.at(60) - 1e-3 * 0.55).abs() < 1e-9);
        assert!((s.at(110) - 1e-4).abs() < 1e-12);
        assert!(s.at(30) > s.at(31));
    }
}
