//! Data flows one way: every `crate::…` path under `src/` points to a module in a lower layer
//! (see `docs/design/connectors.md`). The architecture stays visible without anyone redrawing
//! it: an import that reaches up or sideways fails here, naming the file and the line.

use crate::common::*;

/// The layers, lowest first. A module may use the modules of its own entry's lower entries
/// only (and its own submodules).
const LAYERS: &[&[&str]] = &[
    &["diag", "secrets", "failpoint", "ypath"],
    &["spec"],
    &["types"],
    &["storage"],
    &["source"],
    &["compile"],
    &["sink"],
    &["state"],
    &["run"],
    &["metrics"],
    &["openlineage"],
    &["serve"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn modules_import_only_from_lower_layers() {
    let src = repo().join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let path = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut wrong = Vec::new();
    let mut seen_modules = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some(mine) = layer_of(&module) else {
            wrong.push(format!("src/{}: module `{module}` is in no layer of tests/it/layers.rs", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for c in path.captures_iter(code) {
                let target = &c[1];
                if target == module {
                    continue;
                }
                match layer_of(target) {
                    Some(t) if t < mine => {}
                    Some(_) => wrong.push(format!(
                        "src/{}:{}: `{module}` uses `crate::{target}`, which is not below it",
                        rel.display(),
                        n + 1
                    )),
                    None => wrong.push(format!("src/{}:{}: `crate::{target}` is in no layer", rel.display(), n + 1)),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers (docs/design/connectors.md):\n{}", wrong.join("\n"));
    // The table names every module there is (a module added without a layer is caught above).
    assert!(seen_modules.len() >= 10, "{seen_modules:?}");
}
