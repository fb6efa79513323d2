//! Progress bars (indicatif), hidden when not wanted or when stderr is not a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target(show: bool) -> ProgressDrawTarget {
    if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A set of bars drawn together (one per concurrent run); hidden when `show` is false.
/// Print through [`MultiProgress::println`] so lines do not tear the bars.
pub fn multi(show: bool) -> MultiProgress {
    MultiProgress::with_draw_target(target(show))
}

/// A bar of `len` steps labelled `message`; a hidden bar when `show` is false.
pub fn bar(len: u64, message: &str, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target(show));
    style(&bar, message);
    bar
}

/// A bar of `len` steps labelled `message` inside `multi`.
pub fn bar_in(multi: &MultiProgress, len: u64, message: &str) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(len));
    style(&bar, message);
    bar
}

fn style(bar: &ProgressBar, message: &str) {
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>28} [{bar:30.cyan/blue}] {pos}/{len} {per_sec} eta {eta} {prefix}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
}

/// Prints a line above the bars of `multi`, or plainly to stderr when the bars are hidden
/// (`--quiet`, or stderr is not a terminal), where indicatif would drop it.
pub fn println(multi: &MultiProgress, line: &str) {
    if multi.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = multi.println(line);
    }
}
