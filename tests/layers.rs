//! The layer rules of ARCHITECTURE.md, checked on the source: which top-level module may
//! name which (`crate::x` paths outside test code), no cycle between the sub-modules of
//! one module, and clap only in the command layer. A change that breaks a rule fails
//! here with the file that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use (`app` may use everything).
const LAYERS: &[(&str, &[&str])] = &[
    ("units", &[]),
    ("model", &[]),
    ("source", &["model", "units"]),
    ("collect", &["source", "model", "units"]),
    ("timeline", &["model", "units"]),
    ("detect", &["timeline", "model", "units"]),
    ("rules", &["timeline", "model", "units"]),
    ("engine", &["detect", "rules", "timeline", "model", "units"]),
    ("sink", &["engine", "rules", "timeline", "model", "units"]),
    ("workload", &["model", "units"]),
    (
        "verify",
        &[
            "workload", "collect", "engine", "detect", "rules", "timeline", "source", "model",
            "units",
        ],
    ),
    ("cli", &["workload", "units"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a file without its test module, comments and string literals.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first path segment after every `prefix` (`crate::x`, `crate::{x, y}`).
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        names.insert(ident_at(&group[i..]).to_string());
                        start = false;
                    }
                    c if !c.is_whitespace() => start = false,
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

struct Module {
    top: String,
    sub: Option<String>,
    file: String,
    code: String,
}

fn modules() -> Vec<Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with("tests.rs"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "tests"))
        .map(|path| {
            let rel = path.strip_prefix(&src).expect("under src");
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let sub = parts
                .get(1)
                .filter(|s| parts.len() > 1 && s.as_str() != "mod")
                .cloned();
            Module {
                top: parts[0].clone(),
                sub,
                file: rel.display().to_string(),
                code: code_of(&std::fs::read_to_string(&path).expect("readable")),
            }
        })
        .collect()
}

#[test]
fn top_level_modules_use_only_the_layers_below_them() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut broken = Vec::new();
    for module in modules() {
        if matches!(module.top.as_str(), "lib" | "main" | "app") {
            continue;
        }
        let Some(may) = allowed.get(module.top.as_str()) else {
            broken.push(format!(
                "{}: top-level module `{}` has no row in the layer table (tests/layers.rs, ARCHITECTURE.md)",
                module.file, module.top
            ));
            continue;
        };
        for name in named_after(&module.code, "crate::") {
            if name != module.top && !may.contains(&name.as_str()) {
                broken.push(format!(
                    "{}: `{}` uses `crate::{name}`, which it may not (may use: {})",
                    module.file,
                    module.top,
                    may.join(", ")
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn clap_is_used_only_by_the_command_layer() {
    let broken: Vec<String> = modules()
        .into_iter()
        // clap itself only in `cli` (and the binary); the `cli` types only in `app`.
        .filter(|m| {
            let uses_clap = m.code.contains("clap::") && !matches!(m.top.as_str(), "cli" | "main");
            let names_cli =
                m.code.contains("crate::cli") && !matches!(m.top.as_str(), "cli" | "app");
            uses_clap || names_cli
        })
        .map(|m| m.file)
        .collect();
    assert!(
        broken.is_empty(),
        "clap types below the command layer: {broken:?}"
    );
}

/// Strongly connected components of more than one node (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        if let Some(edges) = s.graph.get(v) {
            for w in edges {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.stack.contains(&w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[test]
fn no_cycle_between_the_sub_modules_of_a_module() {
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for module in modules() {
        let Some(sub) = &module.sub else { continue };
        let mut named = named_after(&module.code, "super::");
        named.extend(named_after(
            &module.code,
            &format!("crate::{}::", module.top),
        ));
        let graph = graphs.entry(module.top.clone()).or_default();
        let edges = graph.entry(sub.clone()).or_default();
        edges.extend(named.into_iter().filter(|n| n != sub && n != "super"));
    }
    let found: Vec<String> = graphs
        .iter()
        .flat_map(|(top, graph)| {
            cycles(graph)
                .into_iter()
                .map(move |c| format!("{top}/: {}", c.join(" <-> ")))
        })
        .collect();
    assert!(found.is_empty(), "sub-module cycles: {found:?}");
}

#[test]
fn the_checker_sees_paths_groups_and_cycles() {
    let code = code_of(
        "use crate::model::Sample;\nuse crate::{units, timeline::Timeline};\n// crate::app\nlet s = \"crate::cli\";\n",
    );
    let names = named_after(&code, "crate::");
    assert_eq!(
        names,
        ["model", "timeline", "units"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
}
