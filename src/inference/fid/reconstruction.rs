//! How closely a tokenizer's reconstructions match their originals, pixel by pixel: SSIM
//! (Wang et al. 2004) and PSNR, both burn-train's (`metric::vision`), over RGB in `[0, 1]`.

use burn::data::dataloader::Progress;
use burn::tensor::{Tensor, TensorData};
use burn_train::metric::vision::{
    PsnrInput, PsnrMetric, PsnrMetricConfig, SsimInput, SsimMetric, SsimMetricConfig,
};
use burn_train::metric::{Metric, MetricMetadata, Numeric, NumericEntry};
use serde::{Deserialize, Serialize};

use crate::nn::Backend;

/// SSIM's Gaussian window (11 wide, σ 1.5: Wang et al.'s).
const SSIM_WINDOW: usize = 11;

/// Mean SSIM and PSNR of reconstructions against their originals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionQuality {
    /// Mean SSIM per image (1 is identical); `None` for images smaller than its window.
    pub ssim: Option<f64>,
    /// Mean PSNR per image, in dB.
    pub psnr_db: f64,
}

/// `[n, 3, size, size]` in `[0, 1]` from `[size, size, 3]` RGB bytes.
fn unit_batch<B: Backend>(images: &[Vec<u8>], size: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f32> = images
        .iter()
        .flat_map(|pixels| pixels.iter().map(|&p| p as f32 / 255.0))
        .collect();
    Tensor::<B, 4>::from_data(
        TensorData::new(values, [images.len(), size, size, 3]),
        device,
    )
    .permute([0, 3, 1, 2])
}

fn value(entry: NumericEntry) -> f64 {
    match entry {
        NumericEntry::Value(v) => v,
        NumericEntry::Aggregated {
            aggregated_value, ..
        } => aggregated_value,
    }
}

/// Compares `reconstructed[i]` with `original[i]`, square `[size, size, 3]` RGB bytes each.
pub fn reconstruction_quality<B: Backend>(
    reconstructed: &[Vec<u8>],
    original: &[Vec<u8>],
    size: usize,
    device: &B::Device,
) -> ReconstructionQuality {
    assert_eq!(
        reconstructed.len(),
        original.len(),
        "one original per image"
    );
    let outputs = unit_batch::<B>(reconstructed, size, device);
    let targets = unit_batch::<B>(original, size, device);
    let once = MetricMetadata {
        progress: Progress::new(1, 1),
        global_progress: Progress::new(1, 1),
        iteration: None,
        lr: None,
    };
    let ssim = (size >= SSIM_WINDOW).then(|| {
        let mut metric = SsimMetric::<B>::new(SsimMetricConfig::new(1.0));
        metric.update(&SsimInput::new(outputs.clone(), targets.clone()), &once);
        value(metric.value())
    });
    let mut psnr = PsnrMetric::<B>::new(PsnrMetricConfig::new(1.0));
    psnr.update(&PsnrInput::new(outputs, targets), &once);
    ReconstructionQuality {
        ssim,
        psnr_db: value(psnr.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type CpuBackend = burn::backend::Flex;

    #[test]
    fn identical_images_score_one_and_noise_scores_less() {
        let size = 16;
        let original: Vec<Vec<u8>> = (0..3)
            .map(|n| {
                (0..size * size * 3)
                    .map(|i| ((i * 7 + n * 40) % 256) as u8)
                    .collect()
            })
            .collect();
        let noisy: Vec<Vec<u8>> = original
            .iter()
            .map(|img| {
                img.iter()
                    .enumerate()
                    .map(|(i, &p)| if i % 3 == 0 { p.saturating_add(30) } else { p })
                    .collect()
            })
            .collect();
        let device = Default::default();
        let same = reconstruction_quality::<CpuBackend>(&original, &original, size, &device);
        assert!((same.ssim.unwrap() - 1.0).abs() < 1e-4, "{same:?}");
        let worse = reconstruction_quality::<CpuBackend>(&noisy, &original, size, &device);
        assert!(
            worse.ssim.unwrap() < 0.995 && worse.psnr_db < same.psnr_db,
            "{worse:?}"
        );
        assert!(worse.psnr_db > 10.0 && worse.psnr_db < 40.0, "{worse:?}");
        let tiny = reconstruction_quality::<CpuBackend>(&[vec![0; 27]], &[vec![0; 27]], 3, &device);
        assert_eq!(tiny.ssim, None);
    }
}
