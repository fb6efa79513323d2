//! Imports point down only: `experiments -> train -> inference -> data -> models -> nn -> io`.
//! Reads every file under `src/` and checks each `crate::<module>` path against its layer, and
//! that the files inside one layer do not import each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom; a file may name its own layer or any below it. `backend` and `cli`
/// serve the binaries and sit on top.
const LAYERS: [&str; 8] = [
    "io",
    "nn",
    "models",
    "data",
    "inference",
    "train",
    "backend",
    "cli",
];

fn rank(layer: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| *l == layer)
        .unwrap_or_else(|| panic!("src/{layer} is not in the layer list"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (doc links may point anywhere).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` path in `text`, as `[a, b]` (b may be empty).
fn crate_paths(text: &str) -> Vec<[String; 2]> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("crate::") {
        let rest = &text[start + "crate::".len()..];
        let mut parts = rest.split("::").map(|p| {
            p.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        });
        let first = parts.next().unwrap_or_default();
        let second = parts.next().unwrap_or_default();
        found.push([first, second]);
    }
    found
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let layer = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if layer == "lib" {
            continue;
        }
        for [target, _] in crate_paths(&code(file)) {
            if LAYERS.contains(&target.as_str()) && rank(&target) > rank(&layer) {
                upward.push(format!("{} uses crate::{target}", relative.display()));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn the_files_of_a_layer_form_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for layer in LAYERS {
        let dir = src.join(layer);
        if !dir.is_dir() {
            continue;
        }
        // Module name -> the sibling modules it names (via `super::x` or `crate::layer::x`).
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        let module_of = |path: &Path| -> String {
            let relative = path.strip_prefix(&dir).unwrap();
            let first = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            first.trim_end_matches(".rs").to_string()
        };
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
        for file in &files {
            let from = module_of(file);
            if from == "mod" {
                continue;
            }
            let text = code(file);
            let mut names: Vec<String> = crate_paths(&text)
                .into_iter()
                .filter(|[l, _]| l == layer)
                .map(|[_, m]| m)
                .collect();
            for (start, _) in text.match_indices("super::") {
                let name: String = text[start + "super::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // `super::` inside a file directly under the layer names a sibling module.
                if file.parent() == Some(dir.as_path()) {
                    names.push(name);
                }
            }
            let edges = graph.entry(from.clone()).or_default();
            for name in names {
                if name != from && name != "mod" && modules.contains(&name) {
                    edges.insert(name);
                }
            }
        }
        // Depth-first search for a back edge.
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<String, u8>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            match state.get(node) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == node).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(node.to_string());
                    return Some(cycle);
                }
                Some(2) => return None,
                _ => {}
            }
            state.insert(node.to_string(), 1);
            stack.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, state, stack) {
                    return Some(cycle);
                }
            }
            stack.pop();
            state.insert(node.to_string(), 2);
            None
        }
        let mut state = BTreeMap::new();
        for node in graph.keys() {
            if let Some(cycle) = visit(node, &graph, &mut state, &mut Vec::new()) {
                panic!("import cycle in src/{layer}: {}", cycle.join(" -> "));
            }
        }
    }
}
