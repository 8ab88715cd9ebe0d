//! The README's layering rule, checked on the source: each module may use
//! only the modules below it, and only the Pingora adapters know Pingora.
//! A `crate::` path to a module higher up, anywhere in a module's files
//! (tests included), fails this test with the file and line.

use std::fs;
use std::path::{Path, PathBuf};

/// From the ground up, as in the README. `main.rs` is above them all.
const LAYERS: &[&str] = &[
    "digest",
    "metrics",
    "itip",
    "ischedule",
    "smtp",
    "dkim",
    "config",
    "store",
    "discovery",
    "routing",
    "scheduling",
    "imip",
    "mail",
    "proxy",
    "app",
];

/// Modules that may name the `pingora` crate.
const PINGORA_ADAPTERS: &[&str] = &["proxy", "app"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for
/// `lib.rs` and `main.rs`).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_string()),
    }
}

/// Every top-level module a line names through `crate::`, including the
/// braced form `use crate::{a::X, b};`.
fn named_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        } else {
            found.push(
                after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
        rest = after;
    }
    found.retain(|n| !n.is_empty());
    found
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

#[test]
fn every_module_has_a_place_in_the_layering() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut unplaced: Vec<String> = files
        .iter()
        .filter_map(|f| module_of(f))
        .filter(|m| layer(m).is_none())
        .collect();
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS (and the README's layering): {unplaced:?}"
    );
}

#[test]
fn no_module_uses_one_above_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(own) = layer(&module) else { continue };
        let text = fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for used in named_modules(code) {
                if layer(&used).is_some_and(|l| l > own) {
                    violations.push(format!(
                        "{}:{}: `{module}` uses `{used}`, which sits above it",
                        file.strip_prefix(src()).unwrap().display(),
                        number + 1
                    ));
                }
            }
            if code.contains("pingora") && !PINGORA_ADAPTERS.contains(&module.as_str()) {
                violations.push(format!(
                    "{}:{}: `{module}` names pingora; only {PINGORA_ADAPTERS:?} may",
                    file.strip_prefix(src()).unwrap().display(),
                    number + 1
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The README's table is the rule people read: it must list the same
/// modules, in the same order, as this check enforces.
#[test]
fn the_readme_table_lists_the_layers_in_order() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("### Layering")
        .nth(1)
        .expect("README has a Layering section");
    let rows: Vec<(String, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| 1 |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].trim_matches('`').to_string())
        })
        .collect();
    let numbered: Vec<(String, String)> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, m)| ((i + 1).to_string(), m.to_string()))
        .collect();
    assert_eq!(rows, numbered, "README's layering table vs LAYERS");
}

#[test]
fn the_checker_sees_both_path_forms() {
    assert_eq!(
        named_modules("use crate::{config::Config, mail::queue};"),
        ["config", "mail"]
    );
    assert_eq!(
        named_modules("x: crate::proxy::Thing, y: crate::itip::A"),
        ["proxy", "itip"]
    );
    assert!(layer("itip") < layer("mail"));
}
