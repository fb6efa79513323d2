//! `bench --sections growth`: how the data pipeline's costs grow with the dataset, up to
//! MSCOCO's size, on synthetic sets of 2k, 20k and 100k training images whose JPEGs have
//! COCO's pixel count (560 x 560 = 313,600 pixels; COCO's typical image is 640 x 480 =
//! 307,200). Each size runs in a fresh process (this binary again, with `--growth-one`), so its
//! memory figures are its own.
//!
//! Per size, the COCO preset's data path (224 px cache, captions of up to 32 tokens):
//! - generating the set (serial drawing from the seed, parallel JPEG encoding);
//! - loading both splits' annotations: time and the anonymous memory they take;
//! - building the train split's image cache on all cores: images/s and its size on disk;
//! - tokenizing the captions and mapping the cache;
//! - assembling batches of 64 from the cache at random (what the engine's loader thread does):
//!   images/s on one thread and on all cores;
//! - training the COCO preset's joint classifier for `--steps` steps at batch 64 through the
//!   engine's batch loader: images/s, time waiting for data, and resident memory, split into
//!   anonymous memory (heap: what must not grow with the dataset) and file-backed pages (the
//!   mapped cache: the kernel's page cache, reclaimed under pressure), read from
//!   `/proc/self/smaps_rollup`. The peak (`VmHWM`) counts both.
//! - the bytes the examples (token ids, categories) hold, counted: what does grow.
//!
//! The generated sets stay under `<data-dir>/growth/` (reused by a later run, about 78 KB per
//! image); each size's cache is built in a fresh folder there and deleted after.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::Module;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use vislang::backend::CpuBackend;
use vislang::data::prepared::load_captioned_splits;
use vislang::data::{
    ensure_synthetic_coco, synthetic_dir_name, BadEntryPolicy, CaptionSource,
    ClassificationExample, ClassificationSplit, CocoSplit, DataConfig, ImageCache, PreparedData,
    SyntheticCocoConfig, TextTokenizer,
};
use vislang::models::classifier::Modality;
use vislang::train::classify::{model_config, ClassifyConfig};
use vislang::train::engine::batch_loader::BatchLoader;
use vislang::train::engine::mixed_precision::MixedPrecision;
use vislang::train::engine::{optimizer, step, step_batch};
use vislang::train::workloads::classifier_task;

type Train = Autodiff<CpuBackend>;

/// Side of the generated JPEGs: COCO's pixel count in a square.
pub const SOURCE_SIZE: u32 = 560;
/// Held-out images of every size.
const VAL_IMAGES: usize = 500;
/// Batch of the assembly and training measurements (the COCO preset's).
const BATCH: usize = 64;

/// One size's measurements.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrowthRow {
    pub images: usize,
    pub captions: usize,
    /// `None` when the set already existed.
    pub generate_seconds: Option<f64>,
    pub jpeg_bytes: u64,
    /// The English caption and instance files of both splits, as read.
    pub annotation_bytes: u64,
    pub annotations_seconds: f64,
    pub annotations_mib: f64,
    pub cache_build_seconds: f64,
    pub cache_bytes: u64,
    pub prepare_seconds: f64,
    pub assembly_one_thread: f64,
    pub assembly_all_threads: f64,
    pub threads: usize,
    /// Anonymous memory with the data prepared, before the model exists.
    pub data_anon_mib: f64,
    /// What the training split's examples hold (counted, not sampled).
    pub examples_bytes: usize,
    pub train_images_per_second: f64,
    pub train_steps: usize,
    pub data_wait_seconds: f64,
    pub anon_mib: f64,
    pub file_mib: f64,
    pub peak_mib: f64,
}

/// A field of `/proc/self/<file>` in MiB (0 where Linux's counters are unavailable).
/// `smaps_rollup` walks the page tables, so its `Rss` and `Anonymous` are exact.
fn proc_mib(file: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/self/{file}")).unwrap_or_default();
    let kib = text
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

/// Anonymous memory (heap and stacks: what the process itself holds), MiB.
fn anonymous_mib() -> f64 {
    proc_mib("smaps_rollup", "Anonymous:")
}

/// Resident pages of mapped files (the image cache, the binary), MiB.
fn file_mib() -> f64 {
    proc_mib("smaps_rollup", "Rss:") - anonymous_mib()
}

/// The bytes a split's examples hold in memory (token ids, categories, their vectors).
fn examples_bytes(split: &ClassificationSplit) -> usize {
    use std::mem::size_of;
    split
        .examples
        .iter()
        .map(|e| {
            size_of::<ClassificationExample>()
                + e.captions.capacity() * size_of::<Vec<u32>>()
                + e.captions.iter().map(|c| c.capacity() * 4).sum::<usize>()
                + e.categories.capacity() * 4
        })
        .sum()
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs every size in its own process and prints the growth table, a row as each finishes.
pub fn run(sizes: &[usize], steps: usize, data_dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    print_header();
    let mut failed = Vec::new();
    for &n in sizes {
        eprintln!("[growth] {n} training images ...");
        let output = Command::new(&exe)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--steps", &steps.to_string()])
            .args(["--growth-one", &n.to_string()])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let row = stdout
            .lines()
            .find_map(|line| line.strip_prefix("growth-row: "))
            .and_then(|json| serde_json::from_str::<GrowthRow>(json).ok());
        match row {
            Some(row) => print_row(&row),
            None => failed.push(format!(
                "the {n}-image measurement failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }
    say!(
        "\n(training: {steps} steps of the COCO preset's joint classifier at batch {BATCH}, \
         through the engine's batch loader; RSS read after them)"
    );
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("\n")),
    }
}

fn print_header() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    say!("\n## data growth (COCO preset: 224 px cache, {SOURCE_SIZE} px JPEGs)");
    say!(
        "\n| train images | captions | generate (img/s) | JPEGs | annotation files | annotations: load s, MiB | \
         cache build img/s | cache on disk | tokenize + map s | batch assembly img/s (1 thread / {threads} threads) | \
         examples in memory | anon MiB with data prepared | training img/s | waiting for data | RSS after training: anon / file / peak MiB |"
    );
    say!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(row: &GrowthRow) {
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let generate = row.generate_seconds.map_or("(existed)".into(), |s| {
        format!("{:.0}", (row.images + VAL_IMAGES) as f64 / s)
    });
    say!(
        "| {} | {} | {generate} | {:.0} MiB | {:.1} MiB | {:.3} s, {:.1} MiB | {:.0} | {:.0} MiB | {:.2} | {:.0} / {:.0} | {:.1} MiB | {:.0} | {:.1} | {:.2} s of {:.1} s | {:.0} / {:.0} / {:.0} |",
        row.images,
        row.captions,
        mib(row.jpeg_bytes),
        mib(row.annotation_bytes),
        row.annotations_seconds,
        row.annotations_mib,
        row.images as f64 / row.cache_build_seconds,
        mib(row.cache_bytes),
        row.prepare_seconds,
        row.assembly_one_thread,
        row.assembly_all_threads,
        mib(row.examples_bytes as u64),
        row.data_anon_mib,
        row.train_images_per_second,
        row.data_wait_seconds,
        (row.train_steps * BATCH) as f64 / row.train_images_per_second,
        row.anon_mib,
        row.file_mib,
        row.peak_mib,
    );
}

/// Measures one size in this process and prints its row as JSON.
pub fn run_one(n_train: usize, steps: usize, data_dir: &Path) -> Result<(), String> {
    let row = measure(n_train, steps, data_dir)?;
    let json = serde_json::to_string(&row).map_err(|e| e.to_string())?;
    say!("growth-row: {json}");
    Ok(())
}

fn measure(n_train: usize, steps: usize, data_dir: &Path) -> Result<GrowthRow, String> {
    let synthetic = SyntheticCocoConfig {
        n_train,
        n_val: VAL_IMAGES,
        image_size: SOURCE_SIZE,
        ..SyntheticCocoConfig::default()
    };
    let growth_dir = data_dir.join("growth");
    let root = growth_dir.join(synthetic_dir_name(&synthetic));
    let generate_seconds = if root.exists() {
        None
    } else {
        let started = Instant::now();
        ensure_synthetic_coco(&root, &synthetic).map_err(|e| e.to_string())?;
        Some(started.elapsed().as_secs_f64())
    };
    ensure_synthetic_coco(&root, &synthetic).map_err(|e| e.to_string())?;
    let jpeg_bytes = folder_bytes(&CocoSplit::Train2014.image_dir(&root));

    let annotation_bytes = [CocoSplit::Train2014, CocoSplit::Val2014]
        .iter()
        .flat_map(|split| [split.captions_path(&root), split.instances_path(&root)])
        .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
        .sum();
    let data = DataConfig::coco(root.clone());
    let policy = BadEntryPolicy::Fail;
    let anon_before = anonymous_mib();
    let started = Instant::now();
    let splits = load_captioned_splits(
        None,
        &synthetic,
        &CaptionSource::default(),
        policy,
        &growth_dir,
    )
    .map_err(|e| e.to_string())?;
    let annotations_seconds = started.elapsed().as_secs_f64();
    let annotations_mib = anonymous_mib() - anon_before;
    let captions = splits.train.all_captions().count();

    let cache_dir = growth_dir.join(format!("cache-{n_train}-{}", std::process::id()));
    let cleanup = RemoveOnDrop(cache_dir.clone());
    let started = Instant::now();
    let (cache, _) =
        ImageCache::open_or_build(&splits.train, data.image_size, &cache_dir, policy, false)
            .map_err(|e| e.to_string())?;
    let cache_build_seconds = started.elapsed().as_secs_f64();
    let cache_bytes = std::fs::metadata(cache.path()).map_or(0, |m| m.len());
    drop(cache);

    // One vocabulary for every size (learnt from the first 2,000 images' captions), so the
    // sizes differ only in how much they tokenize.
    let first: Vec<&str> = splits
        .train
        .images
        .iter()
        .take(2000)
        .flat_map(|image| image.captions.iter().map(String::as_str))
        .collect();
    let tokenizer = TextTokenizer::train_wordpiece(first.into_iter(), data.vocab_size)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let prepare = |dataset| {
        ClassificationSplit::prepare(
            dataset,
            &tokenizer,
            data.image_size,
            data.max_text_len,
            None,
            &cache_dir,
            policy,
            false,
        )
        .map_err(|e| e.to_string())
    };
    let train = prepare(splits.train)?;
    let prepare_seconds = started.elapsed().as_secs_f64();
    let val = prepare(splits.val)?;
    let prepared = PreparedData {
        train,
        val,
        tokenizer,
        skipped: Default::default(),
        object_tokens: Vec::new(),
    };

    let data_anon_mib = anonymous_mib();
    let examples_bytes = examples_bytes(&prepared.train);
    let device = Default::default();
    let (task, mut budget) = classifier_task(&prepared, BATCH);
    budget.learning_rate = 3e-4;
    let random_batches = |count: usize, seed: u64| -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| (0..BATCH).map(|_| rng.random_range(0..n_train)).collect())
            .collect()
    };
    let assemble = |batches: &[Vec<usize>]| {
        for (k, indices) in batches.iter().enumerate() {
            let batch = step_batch::<Train, _>(&task, indices, k as u64, &device);
            std::hint::black_box(batch.map_err(|e| e.to_string())?);
        }
        Ok::<(), String>(())
    };
    let batches = random_batches(40, 1);
    let started = Instant::now();
    assemble(&batches)?;
    let assembly_one_thread = (40 * BATCH) as f64 / started.elapsed().as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batches = random_batches(40 * threads, 2);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = batches
            .chunks(40)
            .map(|chunk| scope.spawn(|| assemble(chunk)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("an assembly thread"))
    })?;
    let assembly_all_threads = (40 * threads * BATCH) as f64 / started.elapsed().as_secs_f64();

    // Training at the COCO preset through the engine's step and batch loader, at random
    // examples across the whole split (as an epoch's shuffled order visits them).
    let config = ClassifyConfig::coco(root.clone());
    let model = model_config(&config, Modality::Joint, &prepared).init::<Train>(&device);
    let n_params = model.num_params();
    eprintln!(
        "[growth] {n_train}: training the COCO preset's joint classifier ({n_params} parameters)"
    );
    let mut optimizer = optimizer::<Train, _>(&budget);
    let mut mixed = MixedPrecision::new(budget.precision);
    let batches = random_batches(steps + 2, 3);
    let mut model = Some(model);
    // Steps `first..` on `batches`; returns the time spent waiting for them.
    let mut run_steps = |batches: &[Vec<usize>], first: usize| -> Result<f64, String> {
        std::thread::scope(|scope| {
            let mut loader = BatchLoader::spawn(scope, batches.len(), 1, |k| {
                step_batch::<Train, _>(&task, &batches[k], (first + k) as u64, &device)
            });
            for k in 0..batches.len() {
                let batch = loader.next_batch().map_err(|e| e.to_string())?;
                let (stepped, losses) = step::<Train, _>(
                    &task,
                    model.take().expect("a model"),
                    &mut optimizer,
                    &mut mixed,
                    batch,
                    (first + k) as u64,
                    budget.learning_rate,
                    &device,
                    None,
                )
                .map_err(|e| e.to_string())?;
                model = Some(stepped);
                if k + 1 == batches.len() {
                    let _ = losses.total.into_data();
                }
            }
            Ok(loader.waited().as_secs_f64())
        })
    };
    run_steps(&batches[..2], 0)?; // untimed: the first steps allocate
    let started = Instant::now();
    let data_wait_seconds = run_steps(&batches[2..], 2)?;
    let train_images_per_second = (steps * BATCH) as f64 / started.elapsed().as_secs_f64();

    let row = GrowthRow {
        images: n_train,
        captions,
        generate_seconds,
        jpeg_bytes,
        annotation_bytes,
        annotations_seconds,
        annotations_mib,
        cache_build_seconds,
        cache_bytes,
        prepare_seconds,
        assembly_one_thread,
        assembly_all_threads,
        threads,
        data_anon_mib,
        examples_bytes,
        train_images_per_second,
        train_steps: steps,
        data_wait_seconds,
        anon_mib: anonymous_mib(),
        file_mib: file_mib(),
        peak_mib: proc_mib("status", "VmHWM:"),
    };
    drop(prepared);
    drop(cleanup);
    Ok(row)
}

/// The measurement's own cache folder, removed however the measurement ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
