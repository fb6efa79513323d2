//! What `finetune-vqa` writes when every run is done: `results.json`, `results.md`, the
//! per-type and curve charts, and `report.html` linking each run's own report.

use std::collections::BTreeSet;
use std::path::Path;

use super::{FinetuneVqaReport, QaSummary};
use crate::io::checkpoint::write_atomic;
use crate::train::classify::{ClassifierKind, ClassifyError};
use crate::train::report::metrics::MeanStd;
use crate::train::report::plots::{grouped_bar_chart, line_chart, Bar, BarGroup, Series};
use crate::train::report::Report;

/// The question types of the table's columns.
fn question_types(report: &FinetuneVqaReport) -> Vec<String> {
    let types: BTreeSet<&String> = report
        .summary
        .iter()
        .flat_map(|row| row.per_type.keys())
        .collect();
    types.into_iter().cloned().collect()
}

fn percent(m: &MeanStd) -> String {
    format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.std)
}

fn row_cells(row: &QaSummary, types: &[String]) -> Vec<String> {
    std::iter::once(row.model.clone())
        .chain(std::iter::once(percent(&row.accuracy)))
        .chain(
            types
                .iter()
                .map(|t| row.per_type.get(t).map_or("-".into(), percent)),
        )
        .collect()
}

/// The table: accuracy (%) overall and per question type, mean ± std over seeds.
pub fn results_table(report: &FinetuneVqaReport) -> String {
    let types = question_types(report);
    let mut table = format!(
        "| model | overall | {} |\n|---|---|{}\n",
        types.join(" | "),
        "---|".repeat(types.len())
    );
    for row in &report.summary {
        table += &format!("| {} |\n", row_cells(row, &types).join(" | "));
    }
    table
}

/// The mean accuracy of a row and its std.
pub fn row_accuracy(report: &FinetuneVqaReport, model: &str) -> Option<MeanStd> {
    report
        .summary
        .iter()
        .find(|row| row.model == model)
        .map(|row| row.accuracy)
}

/// One of the experiment's two questions: a row's lead over the best of some others, and the
/// largest std among them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub what: &'static str,
    /// In accuracy points (0-100).
    pub margin: f64,
    pub largest_std: f64,
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:+.1} points (largest std: {:.1})",
            self.what, self.margin, self.largest_std
        )
    }
}

/// Joint against the better of question-only and image-only, and LXMERT pretrained against
/// from scratch, where the rows ran.
pub fn comparisons(report: &FinetuneVqaReport) -> Vec<Comparison> {
    let gap = |what, a: &str, others: &[&str]| {
        let a = row_accuracy(report, a)?;
        let rows: Vec<MeanStd> = others
            .iter()
            .filter_map(|name| row_accuracy(report, name))
            .collect();
        let best = rows.iter().max_by(|x, y| x.mean.total_cmp(&y.mean))?;
        let largest_std = rows.iter().map(|r| r.std).fold(a.std, f64::max);
        Some(Comparison {
            what,
            margin: 100.0 * (a.mean - best.mean),
            largest_std: 100.0 * largest_std,
        })
    };
    [
        gap(
            "joint minus best of question-only and image-only",
            "joint",
            &["question-only", "image-only"],
        ),
        gap(
            "LXMERT pretrained minus from scratch",
            "lxmert-pretrained",
            &["lxmert"],
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn title(report: &FinetuneVqaReport) -> String {
    format!(
        "finetune-vqa --task {}: question-only vs image-only vs joint, and LXMERT with and without pretraining",
        report.config.task.name()
    )
}

fn description(report: &FinetuneVqaReport) -> String {
    format!(
        "{} (%), mean ± std over seeds {:?}; {} training / {} held-out questions, {} answers. Device: {}.",
        report.config.task.metric(),
        report.config.experiment.seeds,
        report.train_questions,
        report.eval_questions,
        report.answers,
        report.device,
    )
}

/// Writes `results.json`, `results.md`, `per-type.png`, the curves and `report.html`.
pub fn write_report(report: &FinetuneVqaReport, out_dir: &Path) -> Result<(), ClassifyError> {
    write_atomic(
        &out_dir.join("results.json"),
        &serde_json::to_vec_pretty(report).expect("reports serialise"),
    )?;
    let mut markdown = format!(
        "# {}\n\n{} {}\n\n{}",
        title(report),
        crate::train::report::provenance(),
        description(report),
        results_table(report)
    );
    for comparison in comparisons(report) {
        markdown += &format!("\n{comparison}.\n");
    }
    write_atomic(&out_dir.join("results.md"), markdown.as_bytes())?;

    let types = question_types(report);
    let columns: Vec<&str> = std::iter::once("overall")
        .chain(types.iter().map(String::as_str))
        .collect();
    let groups: Vec<BarGroup> = report
        .summary
        .iter()
        .map(|row| BarGroup {
            label: row.model.clone(),
            bars: std::iter::once(&row.accuracy)
                .chain(types.iter().filter_map(|t| row.per_type.get(t)))
                .map(|m| Bar {
                    mean: m.mean,
                    std: m.std,
                })
                .collect(),
        })
        .collect();
    grouped_bar_chart(
        &out_dir.join("per-type.png"),
        &format!(
            "Held-out {} overall and per question type (mean ± std over seeds)",
            report.config.task.metric()
        ),
        &columns,
        &groups,
    )?;
    let color = |model: ClassifierKind| {
        ClassifierKind::ALL
            .iter()
            .position(|&m| m == model)
            .unwrap_or(0)
    };
    let curve = |metric: &dyn Fn(&super::QaRunResult, usize) -> f64| -> Vec<Series> {
        report
            .runs
            .iter()
            .map(|run| Series {
                name: super::row_name(run.model).to_string(),
                points: (0..run.history.len())
                    .map(|i| (run.history[i].epoch as f64, metric(run, i)))
                    .collect(),
                color: color(run.model),
            })
            .collect()
    };
    line_chart(
        &out_dir.join("curve-val-accuracy.png"),
        "Held-out accuracy per epoch (one line per seed)",
        "epoch",
        report.config.task.metric(),
        &curve(&|run, i| run.history[i].eval.accuracy),
    )?;
    line_chart(
        &out_dir.join("curve-loss.png"),
        "Training loss per epoch (one line per seed)",
        "epoch",
        "loss",
        &curve(&|run, i| run.history[i].train.get("total").unwrap_or(f64::NAN)),
    )?;

    let mut html = Report::new(&title(report));
    let header: Vec<&str> = ["model"]
        .into_iter()
        .chain(columns.iter().copied())
        .collect();
    let rows: Vec<Vec<String>> = report
        .summary
        .iter()
        .map(|row| row_cells(row, &types))
        .collect();
    html.paragraph(&description(report)).table(&header, &rows);
    for comparison in comparisons(report) {
        html.paragraph(&format!("{comparison}."));
    }
    if !report.skipped_entries.is_empty() {
        html.paragraph(&format!(
            "Skipped (--skip-bad): {}.",
            report.skipped_entries.join("; ")
        ));
    }
    html.image(
        &out_dir.join("per-type.png"),
        &["Accuracy overall and per question type, mean ± std over seeds".into()],
    )
    .heading("Curves")
    .curves(out_dir)
    .heading("Runs");
    for run in &report.runs {
        let name = format!("{}-seed{}", super::row_name(run.model), run.seed);
        html.link(
            &format!("runs/{name}/report.html"),
            &format!("{name}: {:.1}%", 100.0 * run.accuracy),
        );
    }
    if out_dir.join("lxmert-pretraining/report.html").exists() {
        html.link("lxmert-pretraining/report.html", "the LXMERT pretraining");
    }
    html.heading("Config").json(&report.config).write(out_dir)?;
    Ok(())
}
