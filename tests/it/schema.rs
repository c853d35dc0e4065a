//! The JSON Schema: committed file up to date, and every shipped YAML valid against it.

use crate::common::*;

#[test]
fn committed_schema_is_not_stale() {
    let printed = Project::new().weir(&["schema"]).ok().stdout.clone();
    let committed =
        std::fs::read_to_string(repo().join("pipeline.schema.json")).expect("pipeline.schema.json is committed");
    assert_eq!(
        committed.trim_end(),
        printed.trim_end(),
        "pipeline.schema.json is stale: regenerate it with `cargo run -- schema > pipeline.schema.json`"
    );
}

fn shipped_yaml() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in ["pipelines", "examples"] {
        let mut stack = vec![repo().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    if !matches!(p.file_name().and_then(|n| n.to_str()), Some("out" | "data")) {
                        stack.push(p);
                    }
                } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_pipeline_declares_and_satisfies_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("pipeline.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    let files = shipped_yaml();
    assert!(files.len() >= 4, "expected the demo and at least three examples, found {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with("# yaml-language-server: $schema=") && first.ends_with("pipeline.schema.json"),
            "{} must start with the yaml-language-server schema comment",
            f.display()
        );
        // the comment's relative path must point at the committed schema
        let rel = first.trim_start_matches("# yaml-language-server: $schema=");
        assert!(f.parent().unwrap().join(rel).exists(), "{}: {rel} does not exist", f.display());
        let value: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{} does not satisfy the schema: {errors:#?}", f.display());
    }
}

#[test]
fn schema_rejects_what_weir_rejects() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("pipeline.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bad = [
        "tasks: { a: { extract: { stor: raw, path: x.csv } } }",
        "tasks: { a: { transform: { sql: SELECT 1 }, load: { from: a, store: s, path: p } } }",
        "tasks: { a: { load: { from: b, store: s, path: p, mode: upsert } } }",
        "tasks: {}\nfoo: 1",
        "max_parallel: 0\ntasks: { a: { transform: { sql: SELECT 1 } } }",
    ];
    for y in bad {
        let v: serde_json::Value = serde_yaml::from_str(y).unwrap();
        assert!(!validator.is_valid(&v), "schema accepted: {y}");
    }
    let good: serde_json::Value = serde_yaml::from_str(
        "vars: { n: 3, flag: true }\nstores: { s: { url: 'file://x', options: { a: 1 } } }\ntasks: { a: { transform: { sql: SELECT 1 } } }",
    )
    .unwrap();
    assert!(validator.is_valid(&good));
}

/// Every key of the schema is described in the reference.
#[test]
fn reference_documents_every_key() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("pipeline.schema.json")).unwrap()).unwrap();
    let reference = std::fs::read_to_string(repo().join("docs/reference.md")).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    fn collect(v: &serde_json::Value, keys: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                    keys.extend(props.keys().cloned());
                }
                for x in m.values() {
                    collect(x, keys);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, keys)),
            _ => {}
        }
    }
    collect(&schema, &mut keys);
    assert!(keys.len() > 30, "{keys:?}");
    let missing: Vec<&String> = keys.iter().filter(|k| !reference.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "docs/reference.md does not describe: {missing:?}");
    for cmd in ["validate", "plan", "run", "graph", "runs", "schema"] {
        assert!(reference.contains(&format!("`weir {cmd}")), "docs/reference.md does not describe `weir {cmd}`");
    }
}
