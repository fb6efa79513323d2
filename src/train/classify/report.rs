//! What `classify` writes when every run is done: `results.json`, `results.md`, the comparison
//! and curve charts, and `report.html` linking each run's own report.

use std::path::Path;

use crate::io::checkpoint::write_atomic;
use crate::train::classify::classifier_run::RunResult;
use crate::train::classify::classifier_run::{ClassifierEvaluation, ClassifierKind};
use crate::train::classify::config::{ClassifyConfig, ClassifyError};
use crate::train::engine::run_dir::EpochLog;
use crate::train::lxmert_pretrain::PretrainResult;
use crate::train::report::metrics::MeanStd;
use crate::train::report::plots::{grouped_bar_chart, line_chart, Bar, BarGroup, Series};
use crate::train::report::Report;

/// Summary of one model over seeds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModelSummary {
    pub model: ClassifierKind,
    pub map: MeanStd,
    pub micro_f1: MeanStd,
    pub n_params: usize,
    pub train_samples_per_second: f64,
}

/// What `results.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClassifyReport {
    pub config: ClassifyConfig,
    pub device: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub skipped_entries: Vec<String>,
    pub summary: Vec<ModelSummary>,
    pub runs: Vec<RunResult>,
    /// The pretraining behind `lxmert-pretrained`, when that row ran.
    pub lxmert_pretraining: Option<PretrainResult>,
}

/// `report.html`: the table, the charts, the config, and a link to each run's own report.
fn write_html_report(report: &ClassifyReport, out_dir: &Path) -> Result<(), ClassifyError> {
    let mut html =
        Report::new("Image-only vs text-only vs joint, and LXMERT with and without pretraining");
    let rows: Vec<Vec<String>> = report
        .summary
        .iter()
        .map(|s| {
            vec![
                s.model.name().to_string(),
                s.map.to_string(),
                s.micro_f1.to_string(),
                s.n_params.to_string(),
                format!("{:.0}", s.train_samples_per_second),
            ]
        })
        .collect();
    html.paragraph(&format!(
        "{} train / {} held-out images, device {}, mean ± std over seeds {:?}.",
        report.train_images, report.eval_images, report.device, report.config.seeds
    ))
    .table(
        &[
            "model",
            "held-out mAP",
            "micro-F1",
            "parameters",
            "train samples/s",
        ],
        &rows,
    );
    if let Some((margin, spread)) = joint_margin(report) {
        html.paragraph(&format!(
            "Joint minus best unimodal mAP: {margin:+.4} (largest std across seeds: {spread:.4})."
        ));
    }
    if let Some((gain, spread)) = pretraining_gain(report) {
        html.paragraph(&format!(
            "LXMERT pretrained minus from scratch mAP: {gain:+.4} (larger std across seeds: {spread:.4})."
        ));
    }
    html.image(
        &out_dir.join("comparison.png"),
        &["Held-out mAP and micro-F1, mean ± std over seeds".into()],
    )
    .heading("Curves")
    .curves(out_dir)
    .heading("Runs");
    for run in &report.runs {
        let name = format!("{}-seed{}", run.model.name(), run.seed);
        html.link(
            &format!("runs/{name}/report.html"),
            &format!("{name}: mAP {:.4}, micro-F1 {:.4}", run.map, run.micro_f1),
        );
    }
    if out_dir.join("lxmert-pretraining/report.html").exists() {
        html.link("lxmert-pretraining/report.html", "the LXMERT pretraining");
    }
    html.heading("Config").json(&report.config).write(out_dir)?;
    Ok(())
}

/// The results table in Markdown.
pub fn results_table(report: &ClassifyReport) -> String {
    let mut table = format!(
        "| model | mAP (mean ± std over {} seeds) | micro-F1 | parameters | train samples/s |\n|---|---|---|---|---|\n",
        report.config.seeds.len()
    );
    for s in &report.summary {
        table += &format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            s.model.name(),
            s.map,
            s.micro_f1,
            s.n_params,
            s.train_samples_per_second
        );
    }
    table
}

/// The joint model's lead in mAP over the best unimodal model, and the largest spread (std)
/// among the models compared; `None` unless all three modalities ran.
pub fn joint_margin(report: &ClassifyReport) -> Option<(f64, f64)> {
    let get = |m| report.summary.iter().find(|s| s.model == m);
    let (image, text, joint) = (
        get(ClassifierKind::ImageOnly)?,
        get(ClassifierKind::TextOnly)?,
        get(ClassifierKind::Joint)?,
    );
    let best_unimodal = image.map.mean.max(text.map.mean);
    let spread = image.map.std.max(text.map.std).max(joint.map.std);
    Some((joint.map.mean - best_unimodal, spread))
}

/// LXMERT's mAP with pretraining minus without, and the larger of their stds; `None` unless
/// both LXMERT rows ran.
pub fn pretraining_gain(report: &ClassifyReport) -> Option<(f64, f64)> {
    let get = |m| report.summary.iter().find(|s| s.model == m);
    let (scratch, pretrained) = (
        get(ClassifierKind::Lxmert)?,
        get(ClassifierKind::LxmertPretrained)?,
    );
    Some((
        pretrained.map.mean - scratch.map.mean,
        scratch.map.std.max(pretrained.map.std),
    ))
}

pub fn write_report(report: &ClassifyReport, out_dir: &Path) -> Result<(), ClassifyError> {
    write_atomic(
        &out_dir.join("results.json"),
        &serde_json::to_vec_pretty(report).expect("report serialises"),
    )?;
    let mut markdown = format!(
        "# Image-only vs text-only vs joint, and LXMERT with and without pretraining\n\n{} train / {} held-out images, device {}. {}\n\n{}",
        report.train_images,
        report.eval_images,
        report.device,
        crate::train::report::provenance(),
        results_table(report)
    );
    if let Some((margin, spread)) = joint_margin(report) {
        markdown += &format!(
            "\nJoint minus best unimodal mAP: {margin:+.4} (largest std across seeds: {spread:.4}).\n"
        );
    }
    if let Some((gain, spread)) = pretraining_gain(report) {
        markdown += &format!(
            "\nLXMERT pretrained minus from scratch mAP: {gain:+.4} (larger std across seeds: {spread:.4}).\n"
        );
    }
    write_atomic(&out_dir.join("results.md"), markdown.as_bytes())?;

    let groups: Vec<BarGroup> = report
        .summary
        .iter()
        .map(|s| BarGroup {
            label: s.model.name().to_string(),
            bars: vec![
                Bar {
                    mean: s.map.mean,
                    std: s.map.std,
                },
                Bar {
                    mean: s.micro_f1.mean,
                    std: s.micro_f1.std,
                },
            ],
        })
        .collect();
    grouped_bar_chart(
        &out_dir.join("comparison.png"),
        "Held-out mAP and micro-F1 (mean ± std over seeds)",
        &["mAP", "micro-F1"],
        &groups,
    )?;

    let curve = |metric: fn(&EpochLog<ClassifierEvaluation>) -> f64| -> Vec<Series> {
        report
            .runs
            .iter()
            .map(|run| Series {
                name: run.model.name().to_string(),
                points: run
                    .history
                    .iter()
                    .map(|h| (h.epoch as f64, metric(h)))
                    .collect(),
                color: ClassifierKind::ALL
                    .iter()
                    .position(|&m| m == run.model)
                    .unwrap_or(0),
            })
            .collect()
    };
    line_chart(
        &out_dir.join("curve-val-map.png"),
        "Held-out mAP per epoch (one line per seed)",
        "epoch",
        "mAP",
        &curve(|h| h.eval.map),
    )?;
    line_chart(
        &out_dir.join("curve-loss.png"),
        "Training loss per epoch (one line per seed)",
        "epoch",
        "binary cross-entropy",
        &curve(|h| h.train.get("total").unwrap_or(f64::NAN)),
    )?;
    write_html_report(report, out_dir)?;
    Ok(())
}
