//! `report.html`: one self-contained page per experiment (charts and grids embedded as PNG data,
//! no network), with the config, the machine, the git revision, results, curves, the latest
//! pictures and timings.

pub mod metrics;
pub mod plots;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::io::checkpoint::{write_atomic, CheckpointError};

/// The CPU model and the number of hardware threads of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {threads} threads")
}

/// The git revision of the working directory, when it is a checkout (with `+dirty` when it
/// has uncommitted changes), else "unknown".
pub fn git_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(revision) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{revision}{}", if dirty { "+dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date((seconds / 86_400) as i64)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The one line that names where and when a table was measured: the machine, the date and
/// the revision, as every results table and `bench --markdown` carries it.
pub fn provenance() -> String {
    format!(
        "Measured on {}, {}, revision {}.",
        machine(),
        utc_date(),
        git_revision()
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML page built block by block.
pub struct Report {
    html: String,
}

impl Report {
    /// A page titled `title`, opening with the machine, git revision and crate version.
    pub fn new(title: &str) -> Self {
        let mut html = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%;border:1px solid #eee}}pre{{background:#f7f7f7;padding:1em;overflow:auto}}figcaption{{color:#555;font-size:90%}}</style></head><body>\n<h1>{t}</h1>\n",
            t = escape(title)
        );
        let _ = writeln!(
            html,
            "<p>vislang {} &middot; git {} &middot; {}</p>",
            env!("CARGO_PKG_VERSION"),
            escape(&git_revision()),
            escape(&machine())
        );
        Self { html }
    }

    pub fn heading(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.html, "<h2>{}</h2>", escape(text));
        self
    }

    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.html, "<p>{}</p>", escape(text));
        self
    }

    /// A link to `href` (relative to the report).
    pub fn link(&mut self, href: &str, text: &str) -> &mut Self {
        let _ = writeln!(
            self.html,
            "<p><a href=\"{}\">{}</a></p>",
            escape(href),
            escape(text)
        );
        self
    }

    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> &mut Self {
        self.html.push_str("<table><tr>");
        for h in header {
            let _ = write!(self.html, "<th>{}</th>", escape(h));
        }
        self.html.push_str("</tr>\n");
        for row in rows {
            self.html.push_str("<tr>");
            for cell in row {
                let _ = write!(self.html, "<td>{}</td>", escape(cell));
            }
            self.html.push_str("</tr>\n");
        }
        self.html.push_str("</table>\n");
        self
    }

    /// `value` as pretty JSON.
    pub fn json<T: serde::Serialize>(&mut self, value: &T) -> &mut Self {
        let text = serde_json::to_string_pretty(value).expect("serialises");
        let _ = writeln!(self.html, "<pre>{}</pre>", escape(&text));
        self
    }

    /// Embeds the PNG at `path` with a caption, one line per entry of `caption`; a missing
    /// file is named instead, so that the page still renders.
    pub fn image(&mut self, path: &Path, caption: &[String]) -> &mut Self {
        match std::fs::read(path) {
            Ok(bytes) => {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                let lines: Vec<String> = caption.iter().map(|l| escape(l)).collect();
                let _ = writeln!(
                    self.html,
                    "<figure><img src=\"data:image/png;base64,{data}\"><figcaption>{}</figcaption></figure>",
                    lines.join("<br>")
                );
            }
            Err(_) => {
                let _ = writeln!(
                    self.html,
                    "<p>({} is missing)</p>",
                    escape(&path.display().to_string())
                );
            }
        }
        self
    }

    /// Every `curve-*.png` in `dir`, in name order.
    pub fn curves(&mut self, dir: &Path) -> &mut Self {
        let mut curves: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            n.starts_with("curve-") && n.ends_with(".png")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        curves.sort();
        for path in curves {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.image(&path, &[name]);
        }
        self
    }

    /// Writes `report.html` into `dir`.
    pub fn write(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        self.html.push_str("</body></html>\n");
        write_atomic(&dir.join("report.html"), self.html.as_bytes())
    }
}

/// The newest `epoch-NNN.png` in `dir`, if any.
pub fn latest_epoch_picture(dir: &Path) -> Option<PathBuf> {
    let mut pictures: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pictures.sort();
    pictures.pop()
}

/// The rows of an epoch history table: epoch, training losses, held-out metrics, seconds.
pub fn history_table<E: crate::train::engine::run_dir::EpochEvaluation>(
    history: &[crate::train::engine::run_dir::EpochLog<E>],
) -> (Vec<String>, Vec<Vec<String>>) {
    let Some(first) = history.first() else {
        return (Vec::new(), Vec::new());
    };
    let mut header = vec!["epoch".to_string()];
    header.extend(first.train.0.iter().map(|(n, _)| format!("train {n}")));
    header.extend(
        first
            .eval
            .metrics()
            .iter()
            .map(|(n, _)| format!("held-out {n}")),
    );
    header.extend([
        "lr".to_string(),
        "seconds".to_string(),
        "waiting for data (s)".to_string(),
        "samples/s".to_string(),
    ]);
    let rows = history
        .iter()
        .map(|h| {
            let mut row = vec![h.epoch.to_string()];
            row.extend(h.train.0.iter().map(|(_, v)| format!("{v:.4}")));
            row.extend(h.eval.metrics().iter().map(|(_, v)| format!("{v:.4}")));
            row.extend([
                format!("{:.2e}", h.learning_rate),
                format!("{:.1}", h.train_seconds),
                format!("{:.2}", h.data_wait_seconds),
                format!("{:.0}", h.samples_per_second),
            ]);
            row
        })
        .collect();
    (header, rows)
}

/// The report of one training run: its config, epoch table, curves and latest picture.
pub fn training_report<C, E>(
    title: &str,
    dir: &Path,
    config: &C,
    history: &[crate::train::engine::run_dir::EpochLog<E>],
    pictures: Option<(&Path, Vec<String>)>,
) -> Result<(), CheckpointError>
where
    C: serde::Serialize,
    E: crate::train::engine::run_dir::EpochEvaluation,
{
    let mut report = Report::new(title);
    let (header, rows) = history_table(history);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let seconds: f64 = history.iter().map(|h| h.train_seconds).sum();
    report
        .heading("Per epoch")
        .table(&header, &rows)
        .paragraph(&format!(
            "Training time {seconds:.1} s over {} epochs; per-step losses are in metrics.jsonl.",
            history.len()
        ))
        .heading("Curves")
        .curves(dir);
    if let Some((dir, caption)) = pictures {
        if let Some(picture) = latest_epoch_picture(dir) {
            report.heading("Latest pictures").image(&picture, &caption);
        }
    }
    report.heading("Config").json(config).write(dir)
}

#[cfg(test)]
mod tests {
    use super::civil_date;

    #[test]
    fn days_since_the_epoch_become_calendar_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_793), "2026-12-06");
        assert_eq!(civil_date(-1), "1969-12-31");
    }
}
