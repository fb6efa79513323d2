//! The device check (`examples/device_parity.rs`, run by CI on the wgpu backend) between the two
//! CPU backends, and between f32 and mixed precision on Flex: every family's steps, evaluation,
//! logits and generation agree within the stated tolerances, and a broken device is caught.

use crate::common;

use burn::backend::{Autodiff, Flex, NdArray};
use vislang::nn::Precision;
use vislang::train::device_check::{check_families, CheckData, CheckSettings, Comparison};

type Reference = Autodiff<Flex>;

fn data() -> (common::TempDir, CheckData) {
    let dir = common::tempdir();
    let data = CheckData::prepare(dir.path()).expect("check data");
    (dir, data)
}

/// The check of every family with the device's run in `precision` (`steps` steps of batch 4),
/// on backend `D` against Flex, and optionally at a given tolerance.
fn run_check<D: vislang::nn::AutodiffBackend>(
    precision: Precision,
    steps: usize,
    tolerance: Option<f64>,
    device: D::Device,
) -> Vec<Comparison> {
    let (_dir, data) = data();
    let mut settings = CheckSettings::new(steps, 4, precision);
    settings.tolerance = tolerance.unwrap_or(settings.tolerance);
    check_families::<Reference, D>(&data, &settings, &Default::default(), &device)
        .expect("check runs")
}

fn assert_all_pass(comparisons: &[Comparison], what: &str) {
    assert!(
        comparisons.len() >= 10,
        "{what}: only {} comparisons",
        comparisons.len()
    );
    for comparison in comparisons {
        eprintln!("{what}: {}", comparison.row());
        assert!(comparison.passed(), "{what}: {}", comparison.row());
    }
}

#[test]
fn ndarray_computes_what_flex_computes_in_every_family() {
    let comparisons = run_check::<Autodiff<NdArray>>(Precision::F32, 3, None, Default::default());
    assert_all_pass(&comparisons, "ndarray vs flex");
    // The backends differ in summation order, so the differences are real but small.
    assert!(comparisons.iter().any(|c| c.max_difference > 0.0));
}

/// Mixed precision on the CPU: bf16 products on Flex follow the f32 run within the bf16
/// tolerance, and the products really ran in bf16 (the results differ).
#[test]
fn bf16_mixed_precision_follows_the_f32_run() {
    let comparisons = run_check::<Reference>(Precision::Bf16, 3, None, Default::default());
    assert_all_pass(&comparisons, "flex bf16 vs f32");
    let losses = &comparisons[0];
    assert!(
        losses.max_difference > 1e-6,
        "bf16 changed nothing: {}",
        losses.row()
    );
}

/// The check fails a device that computes something else: with a tolerance tighter than the
/// bf16 differences, the bf16 run is reported as a mismatch.
#[test]
fn a_mismatch_is_reported() {
    let comparisons = run_check::<Reference>(Precision::Bf16, 2, Some(1e-9), Default::default());
    assert!(comparisons.iter().any(|c| !c.passed()));
}

/// f16 products with dynamic loss scaling, on Flex: no step overflows at the starting scale,
/// and the run follows the f32 one within the f16 tolerance.
#[test]
fn f16_mixed_precision_with_loss_scaling_follows_the_f32_run() {
    let comparisons = run_check::<Reference>(Precision::F16, 3, None, Default::default());
    assert_all_pass(&comparisons, "flex f16 vs f32");
    assert!(comparisons.iter().all(|c| !c.quantity.contains("skipped")));
}
