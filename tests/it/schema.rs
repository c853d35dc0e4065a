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

/// The errors an independent JSON Schema validator (Python's `jsonschema`, what editors'
/// tooling uses) finds in each instance against `pipeline.schema.json`; `None` without Python.
fn schema_errors(instances: &[(String, serde_json::Value)]) -> Option<Vec<Vec<String>>> {
    let python = test_python()?;
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<&serde_json::Value> = instances.iter().map(|(_, v)| v).collect();
    std::fs::write(dir.path().join("instances.json"), serde_json::to_vec(&values).unwrap()).unwrap();
    let script = format!(
        r#"
import json, jsonschema
schema = json.load(open({schema:?}))
jsonschema.validators.validator_for(schema).check_schema(schema)
v = jsonschema.validators.validator_for(schema)(schema)
print(json.dumps([[f"{{e.message}} at {{list(e.absolute_path)}}" for e in v.iter_errors(i)] for i in json.load(open("instances.json"))]))
"#,
        schema = repo().join("pipeline.schema.json").display().to_string()
    );
    let out = run_python(&python, &script, dir.path());
    Some(serde_json::from_str(out.trim()).unwrap())
}

#[test]
fn every_shipped_pipeline_declares_and_satisfies_the_schema() {
    let files = shipped_yaml();
    assert!(files.len() >= 4, "expected the demo and at least three examples, found {files:?}");
    let mut instances = Vec::new();
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
        instances.push((f.display().to_string(), serde_yaml::from_str(&text).unwrap()));
    }
    let Some(errors) = schema_errors(&instances) else { return };
    for ((name, _), errors) in instances.iter().zip(errors) {
        assert!(errors.is_empty(), "{name} does not satisfy the schema: {errors:#?}");
    }
}

#[test]
fn schema_rejects_what_weir_rejects() {
    let bad = [
        "tasks: { a: { extract: { stor: raw, path: x.csv } } }",
        "tasks: { a: { transform: { sql: SELECT 1 }, load: { from: a, store: s, path: p } } }",
        "tasks: { a: { load: { from: b, store: s, path: p, mode: upsert } } }",
        "tasks: {}\nfoo: 1",
        "max_parallel: 0\ntasks: { a: { transform: { sql: SELECT 1 } } }",
    ];
    let good = "vars: { n: 3, flag: true }\nstores: { s: { url: 'file://x', options: { a: 1 } } }\ntasks: { a: { transform: { sql: SELECT 1 } } }";
    let instances: Vec<(String, serde_json::Value)> =
        bad.iter().chain([&good]).map(|y| (y.to_string(), serde_yaml::from_str(y).unwrap())).collect();
    let Some(errors) = schema_errors(&instances) else { return };
    for ((y, _), e) in instances.iter().zip(&errors).take(bad.len()) {
        assert!(!e.is_empty(), "schema accepted: {y}");
    }
    assert!(errors.last().unwrap().is_empty(), "schema refused a good pipeline: {:?}", errors.last());
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
