//! Every command the README and docs/ show runs as written: each `cargo run --bin NAME -- ...`
//! names a binary that exists, and every `--option` it passes is one that binary's `--help`
//! lists (for `image-tokens` and `lxmert-features`, its subcommand's). Options named in
//! inline code after a binary's name (`` `classify --lxmert-encoder DIR` ``) are checked the
//! same way. Examples and features named with `--example` and `--features` exist, and every
//! relative link points at a file that exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries, by name.
fn binaries() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("classify", env!("CARGO_BIN_EXE_classify")),
        ("finetune-vqa", env!("CARGO_BIN_EXE_finetune-vqa")),
        ("bench", env!("CARGO_BIN_EXE_bench")),
        ("train-vqvae", env!("CARGO_BIN_EXE_train-vqvae")),
        ("image-tokens", env!("CARGO_BIN_EXE_image-tokens")),
        ("train-dalle", env!("CARGO_BIN_EXE_train-dalle")),
        ("generate", env!("CARGO_BIN_EXE_generate")),
        ("evaluate-dalle", env!("CARGO_BIN_EXE_evaluate-dalle")),
        ("pretrain-lxmert", env!("CARGO_BIN_EXE_pretrain-lxmert")),
        ("lxmert-features", env!("CARGO_BIN_EXE_lxmert-features")),
        ("convert-captions", env!("CARGO_BIN_EXE_convert-captions")),
        ("export-lxmert", env!("CARGO_BIN_EXE_export-lxmert")),
        ("fid", env!("CARGO_BIN_EXE_fid")),
    ])
}

/// Binaries whose options belong to a subcommand.
const SUBCOMMANDS: [(&str, &[&str]); 2] = [
    ("image-tokens", &["encode", "decode"]),
    ("lxmert-features", &["convert", "boxes"]),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The shell commands in a document's fenced code blocks, continuation lines joined.
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim_end();
        if let Some(start) = code.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        if pending.contains("cargo ") {
            commands.push(std::mem::take(&mut pending));
        }
        pending.clear();
    }
    commands
}

/// Inline code spans of a document (outside fenced blocks).
fn inline_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        spans.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
    }
    spans
}

fn options(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect()
}

/// The `--help` of `binary` (with its subcommand, when it has one and `args` names it).
fn help(binary: &str, args: &[&str]) -> String {
    let path = binaries()[binary];
    let sub = SUBCOMMANDS
        .iter()
        .find(|(b, _)| *b == binary)
        .and_then(|(_, subs)| args.iter().find(|a| subs.contains(a)).copied());
    let mut command = Command::new(path);
    command.args(sub).arg("--help");
    let output = command.output().unwrap();
    assert!(output.status.success(), "{binary} {sub:?} --help failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn check_options(binary: &str, args: &[&str], context: &str, faults: &mut Vec<String>) {
    let text = help(binary, args);
    for option in options(args) {
        if option == "--help" {
            continue;
        }
        if !text.contains(&format!("{option} ")) && !text.contains(&format!("{option}\n")) {
            faults.push(format!("{context}: {binary} has no option {option}"));
        }
    }
}

#[test]
fn every_documented_command_names_a_binary_and_options_that_exist() {
    let bins = binaries();
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut faults = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&doc).unwrap();
        for command in shell_commands(&text) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let cargo_part: Vec<&str> = words.iter().take_while(|w| **w != "--").copied().collect();
            let args: Vec<&str> = words
                .iter()
                .skip_while(|w| **w != "--")
                .skip(1)
                .copied()
                .collect();
            let after = |flag: &str| {
                cargo_part
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| cargo_part.get(i + 1))
                    .copied()
            };
            if let Some(features) = after("--features") {
                for feature in features.split(',') {
                    if !cargo_toml.contains(&format!("\n{feature} = ")) {
                        faults.push(format!("{name}: no feature {feature} ({command})"));
                    }
                }
            }
            if let Some(example) = after("--example") {
                if !root()
                    .join("examples")
                    .join(format!("{example}.rs"))
                    .exists()
                {
                    faults.push(format!("{name}: no example {example} ({command})"));
                }
            }
            let Some(binary) = after("--bin") else {
                continue;
            };
            if !bins.contains_key(binary) {
                faults.push(format!("{name}: no binary {binary} ({command})"));
                continue;
            }
            check_options(binary, &args, &format!("{name} `{command}`"), &mut faults);
            checked += 1;
        }
        for span in inline_spans(&text) {
            let words: Vec<&str> = span.split_whitespace().collect();
            if let Some(binary) = words.first().filter(|w| bins.contains_key(**w)) {
                if words.len() > 1 {
                    check_options(
                        binary,
                        &words[1..],
                        &format!("{name} `{span}`"),
                        &mut faults,
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        faults.is_empty(),
        "documented commands that do not run:\n{}",
        faults.join("\n")
    );
    assert!(checked >= 40, "only {checked} documented commands found");
}

#[test]
fn every_relative_link_in_the_docs_points_at_a_file() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let dir = doc.parent().unwrap();
        for (start, _) in text.match_indices("](") {
            let target: String = text[start + 2..]
                .chars()
                .take_while(|c| *c != ')')
                .collect();
            if target.starts_with("http") || target.starts_with('#') || target.is_empty() {
                continue;
            }
            let file = target.split('#').next().unwrap();
            if !Path::new(dir).join(file).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to missing files:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_readme_stays_short_and_holds_no_commit_hash_or_date() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        text.lines().count() <= 250,
        "README.md has {} lines",
        text.lines().count()
    );
    for word in text.split(|c: char| !c.is_ascii_alphanumeric() && c != '-') {
        let is_hash = word.len() >= 7
            && word.len() <= 40
            && word.chars().all(|c| c.is_ascii_hexdigit())
            && word.chars().any(|c| c.is_ascii_digit())
            && word.chars().any(|c| c.is_ascii_alphabetic());
        let is_date = word.len() == 10
            && word.as_bytes()[4] == b'-'
            && word.as_bytes()[7] == b'-'
            && word.starts_with("20");
        assert!(!is_hash && !is_date, "README.md holds {word:?}");
    }
}
