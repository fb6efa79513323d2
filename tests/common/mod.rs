//! Helpers shared by the integration tests.
//!
//! A temporary directory is written here rather than taken from the `tempfile` crate: as a
//! dev-dependency it changes the features of shared dependencies, so `cargo test --release`
//! and `cargo run --release` would each build the whole dependency tree.

#![allow(dead_code)]

pub mod lxmert_fixture;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a new empty temporary directory, unique within and across test processes.
pub fn tempdir() -> TempDir {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path =
        std::env::temp_dir().join(format!("vislang-test-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&path).expect("temporary directory");
    TempDir(path)
}

/// Starts `command` and kills it as soon as `marker` exists (e.g. the `state.json` that commits
/// a training run's first epoch): an interruption at a known point.
pub fn kill_once_exists(mut command: Command, marker: &Path) {
    let mut child = command
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} never appeared",
            marker.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// Runs `command`; the test fails with its stderr unless it succeeds.
pub fn run(mut command: Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{:?} failed:\n{}",
        command.get_program(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command`, which must fail with an error rather than a panic; returns its stderr.
pub fn fails(mut command: Command) -> String {
    let output = command.output().unwrap();
    assert!(!output.status.success(), "command should have failed");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    stderr
}

/// A tensor of `shape` with normal draws (mean 0, std `scale`) from a local generator seeded
/// with `seed`. The backend's generator is shared with the tests running in parallel, so
/// seeding it and drawing is not atomic: two draws from one seed may differ.
pub fn normal<B: burn::tensor::backend::Backend, const D: usize>(
    shape: [usize; D],
    scale: f64,
    seed: u64,
) -> burn::tensor::Tensor<B, D> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Box-Muller: burn's `TensorData::random` wants another version of `rand`'s traits.
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            let (u, v): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * scale) as f32
        })
        .collect();
    burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(values, shape),
        &Default::default(),
    )
}
