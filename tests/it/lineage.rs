//! `weir lineage`: the column-level lineage of a pipeline whose answers are known by hand
//! (tests/data/lineage/shop.yaml), read back as JSON and validated against its JSON Schema;
//! the questions `--column` and `--downstream` answer; every format; the mistakes.

use crate::common::*;

fn shop() -> Project {
    let p = Project::new();
    p.copy_from_repo("tests/data/lineage", ".");
    p
}

fn json(p: &Project, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["lineage", "shop.yaml", "--format", "json"];
    all.extend_from_slice(args);
    let r = p.weir(&all);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn task<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["pipelines"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == name)
        .unwrap_or_else(|| panic!("no task {name}"))
}

fn deps(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    format!(
                        "{} {}.{}",
                        d["how"].as_str().unwrap(),
                        d["task"].as_str().unwrap(),
                        d["column"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What column `col` of task `t` depends on: `how task.column`, sorted.
fn from(doc: &serde_json::Value, t: &str, col: &str) -> Vec<String> {
    let c = task(doc, t)["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == col)
        .unwrap_or_else(|| panic!("{t}.{col}"));
    let mut v = deps(&c["from"]);
    v.sort();
    v
}

fn rows(doc: &serde_json::Value, t: &str) -> Vec<String> {
    let mut v = deps(&task(doc, t)["rows"]);
    v.sort();
    v
}

#[test]
fn every_column_of_every_task_with_how() {
    let p = shop();
    // `paid` has one consumer: it runs fused into `enriched`'s query, and still has its lineage.
    assert!(p.weir(&["plan", "shop.yaml"]).ok().stdout.contains("fused into its consumer's query"));
    let doc = json(&p, &[]);
    assert_eq!(doc["weir_lineage"], 1);
    // Extracts: the source's fields (an XML attribute and child elements), and what is read.
    let items = task(&doc, "items");
    let fields: Vec<&str> = items["columns"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["@order", "SKU", "PRICE"]);
    assert_eq!(items["dataset"]["kind"], "files");
    assert_eq!(items["dataset"]["store"], "raw");
    assert!(items["dataset"]["name"].as_str().unwrap().ends_with("/data/items.xml"), "{}", items["dataset"]);
    // A fused view: passed-through columns and a filter.
    assert_eq!(from(&doc, "paid", "amount"), ["copy orders.amount"]);
    assert_eq!(rows(&doc, "paid"), ["filter orders.status"]);
    // `p.*` through a USING join; a CTE's computed column; a correlated scalar subquery.
    assert_eq!(from(&doc, "enriched", "order_id"), ["copy paid.order_id"]);
    assert_eq!(from(&doc, "enriched", "region"), ["transform customers.region"]);
    assert_eq!(from(&doc, "enriched", "items"), ["filter items.order_id", "filter paid.order_id"]);
    assert_eq!(rows(&doc, "enriched"), ["join customers.customer_id", "join paid.customer_id"]);
    // An aggregate and a window ordered by an aggregate.
    assert_eq!(from(&doc, "by_region", "revenue"), ["aggregate enriched.amount"]);
    assert_eq!(from(&doc, "by_region", "place"), ["window enriched.amount"]);
    assert_eq!(rows(&doc, "by_region"), ["group_by enriched.region"]);
    // The load: copies; its partition column; merge keys, order and deletes decide its rows.
    let mart = task(&doc, "mart");
    assert_eq!(mart["dataset"]["kind"], "parquet");
    assert!(mart["dataset"]["name"].as_str().unwrap().ends_with("/lake/mart/"));
    let partitioned: Vec<&str> = mart["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["partition"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(partitioned, ["region"]);
    assert_eq!(from(&doc, "mart", "region"), ["copy enriched.region"]);
    assert_eq!(rows(&doc, "mart"), ["filter enriched.amount", "join enriched.order_id", "sort enriched.updated_at"]);
    // Checks and what they read: an expression parsed, a relationship's other table, a query.
    let checks: Vec<(String, Vec<String>)> = task(&doc, "enriched")["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let reads = c["reads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| format!("{}.{}", r["task"].as_str().unwrap(), r["column"].as_str().unwrap()))
                .collect();
            (c["name"].as_str().unwrap().to_string(), reads)
        })
        .collect();
    assert_eq!(checks[0], ("not_null_order_id".to_string(), vec!["enriched.order_id".to_string()]));
    assert_eq!(checks[1], ("expression".to_string(), vec!["enriched.amount".to_string()]));
    assert_eq!(checks[2].1, ["customers.customer_id", "enriched.customer_id"]);
    assert_eq!(checks[3].0, "items_bounded");
    assert!(checks[3].1.contains(&"enriched.items".to_string()), "{:?}", checks[3]);
}

#[test]
fn where_a_number_comes_from_and_what_a_change_breaks() {
    let p = shop();
    let up = json(&p, &["--column", "by_region.revenue"]);
    let focus = &up["focus"];
    assert_eq!(focus["direction"], "upstream");
    let reach = |f: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = f["reaches"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["how"].as_array().unwrap().iter().map(move |h| {
                    format!("{} {}.{}", h.as_str().unwrap(), r["task"].as_str().unwrap(), r["column"].as_str().unwrap())
                })
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        reach(focus),
        [
            "aggregate enriched.amount",
            "aggregate orders.amount",
            "aggregate paid.amount",
            "filter orders.status",
            // grouped by a column computed from it
            "group_by customers.region",
            "group_by enriched.region",
            "join customers.customer_id",
            "join orders.customer_id",
            "join paid.customer_id",
        ]
    );
    // Only what it reaches is listed.
    let tasks: Vec<&str> =
        up["pipelines"][0]["tasks"].as_array().unwrap().iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["orders", "customers", "paid", "enriched", "by_region"]);

    let down = json(&p, &["--downstream", "customers.region"]);
    let focus = &down["focus"];
    assert_eq!(focus["direction"], "downstream");
    assert_eq!(
        reach(focus),
        [
            "group_by by_region.place",
            "group_by by_region.region",
            "group_by by_region.revenue",
            "transform by_region.region",
            "transform enriched.region",
            "transform mart.region",
        ]
    );
    let checks: Vec<&str> = focus["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["items_bounded"]);

    // The same answers as text.
    let text = p.weir(&["lineage", "shop.yaml", "--downstream", "customers.region"]);
    insta::assert_snapshot!("lineage_downstream_text", normalize(&text.ok().stdout, p.path()));
    let text = p.weir(&["lineage", "shop.yaml", "--column", "by_region.revenue"]);
    insta::assert_snapshot!("lineage_upstream_text", normalize(&text.ok().stdout, p.path()));
    // A pipeline-qualified name says the same.
    let qualified = json(&p, &["--column", "shop.by_region.revenue"]);
    assert_eq!(reach(&qualified["focus"]), reach(&up["focus"]));
}

#[test]
fn text_dot_and_mermaid_show_every_dependency() {
    let p = shop();
    let doc = json(&p, &[]);
    let mut edges = 0;
    for t in doc["pipelines"][0]["tasks"].as_array().unwrap() {
        for c in t["columns"].as_array().unwrap() {
            edges += c["from"].as_array().map_or(0, Vec::len);
        }
        edges += t["rows"].as_array().map_or(0, Vec::len);
    }
    let dot = p.weir(&["lineage", "shop.yaml", "--format", "dot"]).ok().stdout.clone();
    assert!(dot.starts_with("digraph lineage {") && dot.trim_end().ends_with('}'), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), edges, "{dot}");
    assert_eq!(dot.matches("subgraph cluster_").count(), 7);
    let mermaid = p.weir(&["lineage", "shop.yaml", "--format", "mermaid"]).ok().stdout.clone();
    assert_eq!(mermaid.matches("-->|").count() + mermaid.matches("-.->|").count(), edges, "{mermaid}");
    insta::assert_snapshot!("lineage_mermaid", mermaid);
    let text = p.weir(&["lineage", "shop.yaml"]).ok().stdout.clone();
    insta::assert_snapshot!("lineage_text", normalize(&text, p.path()));
}

/// The JSON satisfies the schema `weir schema lineage` prints, checked by an independent
/// validator; the committed copy is that schema.
#[test]
fn the_json_satisfies_its_published_schema() {
    let p = shop();
    let printed = p.weir(&["schema", "lineage"]).ok().stdout.clone();
    let committed = std::fs::read_to_string(repo().join("docs/lineage.schema.json")).expect("docs/lineage.schema.json");
    assert_eq!(
        printed.trim(),
        committed.trim(),
        "docs/lineage.schema.json is stale: regenerate it with `cargo run -- schema lineage > docs/lineage.schema.json`"
    );
    let Some(python) = test_python() else { return };
    for args in [&[][..], &["--column", "by_region.revenue"], &["--downstream", "orders.status"]] {
        let doc = json(&p, args);
        std::fs::write(p.join("doc.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
        let script = format!(
            r#"
import json, jsonschema
schema = json.load(open({schema:?}))
jsonschema.validators.validator_for(schema).check_schema(schema)
errors = [e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(json.load(open("doc.json")))]
print(json.dumps(errors))
"#,
            schema = repo().join("docs/lineage.schema.json").display().to_string()
        );
        let out = run_python(&python, &script, p.path());
        assert_eq!(out.trim(), "[]", "{args:?}");
    }
}

#[test]
fn mistakes_name_what_exists() {
    let p = shop();
    let mut out = String::new();
    for arg in ["by_regon.revenue", "by_region.revenu", "by_region", "nope.x.y"] {
        let r = p.weir(&["lineage", "shop.yaml", "--column", arg]);
        r.code(2);
        out.push_str(&format!("--column {arg}\n{}\n", r.stderr.trim()));
    }
    let r = p.weir(&["lineage", "shop.yaml", "--column", "paid.amount", "--downstream", "paid.amount"]);
    r.code(2);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    insta::assert_snapshot!("lineage_mistakes", out);
    // An invalid pipeline is reported as by `validate`.
    p.write("shop.yaml", "tasks:\n  a:\n    transform: { sql: \"SELECT x FROM nowhere\" }\n");
    let r = p.weir(&["lineage", "shop.yaml"]);
    r.code(2);
    assert!(r.stderr.contains("unknown table `nowhere`"), "{}", r.stderr);
}

/// The tasks whose queries `weir -vv validate` planned (rather than took from the cache).
fn planned(p: &Project) -> Vec<String> {
    let r = p.weir_env(&["-vv", "validate", "p.yaml"], &[("RUST_LOG", "weir=debug")]);
    r.ok();
    let re = regex::Regex::new(r"task=(\w+).*compile: query planned|compile: query planned.*task=(\w+)").unwrap();
    let mut v: Vec<String> = r
        .stderr
        .lines()
        .filter_map(|l| re.captures(l).map(|c| c.get(1).or(c.get(2)).unwrap().as_str().to_string()))
        .collect();
    v.sort();
    v
}

/// Re-validation plans only the queries whose text or inputs' schemas changed, and everything
/// downstream of a changed schema; the answers are those of a compile without the cache.
#[test]
fn revalidation_replans_what_changed_and_everything_downstream_of_it() {
    let p = Project::new();
    p.write("data/t.csv", "a,b\n1,2\n");
    let pipeline = |x: &str| {
        format!(
            "stores:\n  src: {{ url: \"file://data\" }}\ntasks:\n  t:\n    extract: {{ store: src, path: t.csv }}\n  x:\n    transform: {{ sql: \"{x}\" }}\n  y:\n    transform: {{ sql: \"SELECT a + 1 AS a1 FROM x\" }}\n  z:\n    transform: {{ sql: \"SELECT b FROM x\" }}\n  w:\n    transform: {{ sql: \"SELECT a FROM t\" }}\n"
        )
    };
    p.write("p.yaml", pipeline("SELECT a, b FROM t"));
    assert_eq!(planned(&p), ["w", "x", "y", "z"]);
    assert_eq!(planned(&p), Vec::<String>::new(), "nothing changed");
    // Same output schema: only the changed query is planned.
    p.write("p.yaml", pipeline("SELECT a, b FROM t WHERE a > 0"));
    assert_eq!(planned(&p), ["x"]);
    // Its output schema changes: everything reading it is planned again.
    p.write("p.yaml", pipeline("SELECT a, CAST(b AS VARCHAR) AS b FROM t"));
    assert_eq!(planned(&p), ["x", "y", "z"]);
    let plan = p.weir(&["plan", "p.yaml"]).ok().stdout.clone();
    let z = plan.split(". z (transform)").nth(1).unwrap_or_default();
    assert!(z.contains("columns  b varchar"), "z has the new type: {plan}");
    // The extract's schema changes (new data with a text column): everything downstream is
    // planned, and a query that no longer fits is an error, not a cached success.
    p.write("data/t.csv", "a,b\nnot a number,2\n");
    let r = p.weir(&["validate", "p.yaml"]);
    r.code(2);
    assert!(
        r.stderr.contains("tasks.y.transform.sql") || r.stderr.contains("`y`") || r.stderr.contains("a + 1"),
        "{}",
        r.stderr
    );
    p.write("data/t.csv", "a,b\n1,2\n");
    // The cache is only a cache: without it, the same answers.
    let cached = p.weir(&["lineage", "p.yaml", "--format", "json"]).ok().stdout.clone();
    std::fs::remove_dir_all(p.join(".weir")).unwrap();
    let fresh = p.weir(&["lineage", "p.yaml", "--format", "json"]).ok().stdout.clone();
    assert_eq!(cached, fresh);
}
