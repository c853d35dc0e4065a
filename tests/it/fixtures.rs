//! `weir test`: tests of a pipeline's logic on fixture rows (tests/data/fixtures), run in
//! process — transforms, checks, a quarantine, and loads in each mode through weir's own sink —
//! with nothing written to any store; failures show the rows and checks that differ; JUnit
//! XML; mistakes located in the file.

use crate::common::*;

fn shop() -> Project {
    let p = Project::new();
    p.copy_from_repo("tests/data/fixtures", ".");
    p
}

#[test]
fn every_kind_of_test_passes_and_no_store_is_touched() {
    let p = shop();
    let r = p.weir(&["test", ".", "--junit", "junit.xml"]);
    r.ok();
    assert!(r.stdout.contains("5 tests, 0 failed"), "{}", r.stdout);
    assert_eq!(
        r.stdout.matches("\nok    shop · ").count() + usize::from(r.stdout.starts_with("ok    shop · ")),
        5,
        "{}",
        r.stdout
    );
    // Nothing was written: no output, no quarantine file, anywhere in the project.
    assert!(!p.join("lake").exists());
    let mut written = Vec::new();
    let mut dirs = vec![p.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "parquet") {
                written.push(e.path());
            }
        }
    }
    assert!(written.is_empty(), "{written:?}");
    let xml = std::fs::read_to_string(p.join("junit.xml")).unwrap();
    assert!(xml.contains("<testsuite name=\"shop\" tests=\"5\" failures=\"0\""), "{xml}");
    if let Some(python) = test_python() {
        let out = run_python(
            &python,
            "import xml.etree.ElementTree as E\nr = E.parse('junit.xml').getroot()\nprint(len(r.findall('.//testcase')), len(r.findall('.//failure')))",
            p.path(),
        );
        assert_eq!(out.trim(), "5 0");
    }
}

#[test]
fn a_failing_test_shows_the_rows_and_the_checks_that_differ() {
    let p = shop();
    p.write(
        "tests/wrong.yaml",
        "pipeline: shop\ntests:\n  - name: a wrong total and an unexpected check\n    given:\n      deliveries:\n        - { id: 1, region: north, amount: 5.00, updated_at: \"2026-01-01T00:00:00\" }\n        - { id: 2, region: north, amount: -1.00, updated_at: \"2026-01-01T00:00:00\" }\n    expect:\n      totals: [ { region: NORTH, total: 5.00 } ]\n    expect_checks: { failed: [clean.unique] }\n  - name: a merge expected wrong\n    given:\n      deliveries: [ { id: 1, region: north, amount: 1.00, updated_at: \"2026-01-02T00:00:00\", op: D } ]\n      mirror: [ { id: 1, region: NORTH, amount: 9.00, updated_at: \"2025-12-01T00:00:00\", op: I } ]\n    expect:\n      mirror: [ { id: 1, amount: 9.00 } ]\n",
    );
    let r = p.weir(&["test", ".", "--select", "wrong", "--junit", "junit.xml"]);
    r.code(1);
    insta::assert_snapshot!("fixtures_failures", normalize(&r.stdout, p.path()));
    let xml = std::fs::read_to_string(p.join("junit.xml")).unwrap();
    assert!(xml.contains("failures=\"2\"") && xml.contains("&gt;= 0"), "{xml}");
}

#[test]
fn select_runs_the_tests_named_or_touching_a_task() {
    let p = shop();
    let r = p.weir(&["test", ".", "--select", "merge"]);
    r.ok();
    assert!(r.stdout.contains("1 test, 0 failed"), "{}", r.stdout);
    let r = p.weir(&["test", ".", "--select", "history,after_gate"]);
    r.ok();
    assert!(r.stdout.contains("2 tests, 0 failed"), "{}", r.stdout);
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let p = shop();
    let text = std::fs::read_to_string(p.join("shop.yaml")).unwrap();
    p.write(
        "shop.yaml",
        format!(
            "{text}  - name: mistakes\n    given:\n      deliveris: [ {{ id: 1 }} ]\n      deliveries: [ {{ id: 1, amuont: 2 }} ]\n      clean: {{ csv: nowhere.csv }}\n    expect: {{ totals: [ {{ region: x }} ] }}\n"
        ),
    );
    let r = p.weir(&["validate", "shop.yaml"]);
    r.code(2);
    insta::assert_snapshot!("fixtures_mistakes", normalize(&r.stderr, p.path()));
    p.weir(&["test", "."]).code(2);
    // A test file naming no pipeline here.
    p.write("shop.yaml", text);
    p.write("tests/other.yaml", "pipeline: nope\ntests: []\n");
    let r = p.weir(&["test", "."]);
    r.code(2);
    assert!(r.stderr.contains("no pipeline `nope` here (pipelines: shop)"), "{}", r.stderr);
    // `weir validate` reads the test files too: one that does not parse is an error there,
    // located in its file.
    p.write("tests/other.yaml", "pipeline: shop\ntests:\n  - name: typo\n    givn: {}\n");
    let r = p.weir(&["validate", "."]);
    r.code(2);
    assert!(r.stderr.contains("givn") && r.stderr.contains("other.yaml:4"), "{}", r.stderr);
    p.write("tests/other.yaml", "pipeline: shop\ntests: []\n");
    p.weir(&["validate", "."]).ok();
}

/// A fixture value read from the environment (a secret, in the pipeline file's `tests:`) is
/// never shown: not in a failure's rows, nor in the JUnit file.
#[test]
fn a_secret_in_a_fixture_is_never_shown() {
    let secret = "fixture-canary-8Kq3";
    let p = shop();
    let text = std::fs::read_to_string(p.join("shop.yaml")).unwrap();
    p.write(
        "shop.yaml",
        format!(
            "{text}  - name: a secret region\n    given:\n      clean: [ {{ id: 1, region: \"${{env:WEIR_TEST_SECRET}}\", amount: 1.00 }} ]\n    expect:\n      totals: [ {{ region: nowhere, total: 1.00 }} ]\n"
        ),
    );
    let r = p.weir_env(&["test", ".", "--select", "secret", "--junit", "junit.xml"], &[("WEIR_TEST_SECRET", secret)]);
    r.code(1);
    assert!(r.stdout.contains("+ { region: ***, total: 1.00 }"), "{}", r.stdout);
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "{}\n{}", r.stdout, r.stderr);
    let xml = std::fs::read_to_string(p.join("junit.xml")).unwrap();
    assert!(!xml.contains(secret), "{xml}");
}
