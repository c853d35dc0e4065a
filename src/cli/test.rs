//! `weir test`: the pipelines' tests (`tests:` in a pipeline file and `tests/*.yaml` beside
//! it) run in-process on their fixture rows; a line per test, the differences of those that
//! fail, and JUnit XML for CI systems.

use std::fmt::Write as _;

use super::*;
use crate::run::fixtures::TestOutcome;
use crate::spec::TestCase;

/// A test case and the directory its fixture files are relative to.
type Suite<'a> = (&'a Plan, Vec<(TestCase, PathBuf)>);

/// Each pipeline's tests: its own, then those of the test files (`tests/*.yaml` beside it) that
/// name it. `Err(exit code)`, the problem printed, when a test file is malformed, or names no
/// pipeline among `plans` (unless `others`: `weir validate` of one file of a directory checks
/// that the test files parse, not that their pipeline was among those validated).
pub(super) fn suites(plans: &[Plan], others: bool) -> Result<Vec<Suite<'_>>, i32> {
    let mut suites: Vec<Suite<'_>> = plans
        .iter()
        .map(|p| {
            let base = p.source.path.parent().map(Path::to_path_buf).unwrap_or_default();
            (p, p.tests.iter().map(|t| (t.clone(), base.clone())).collect())
        })
        .collect();
    let dirs: std::collections::BTreeSet<PathBuf> =
        plans.iter().map(|p| p.source.path.parent().map(Path::to_path_buf).unwrap_or_default()).collect();
    for dir in dirs {
        let files = match spec::load_test_files(&dir) {
            Ok(f) => f,
            Err(SpecError::Invalid(d)) => {
                print_diagnostics(&d);
                return Err(EXIT_INVALID);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Err(EXIT_INVALID);
            }
        };
        let here: Vec<usize> = (0..suites.len())
            .filter(|&k| suites[k].0.source.path.parent().map(Path::to_path_buf).unwrap_or_default() == dir)
            .collect();
        for (file, tf) in files {
            let target = match &tf.pipeline {
                Some(name) => here.iter().copied().find(|&k| suites[k].0.pipeline == *name),
                None if here.len() == 1 => Some(here[0]),
                None => None,
            };
            let Some(k) = target else {
                if others {
                    continue;
                }
                let names: Vec<&str> = here.iter().map(|&k| suites[k].0.pipeline.as_str()).collect();
                let why = match &tf.pipeline {
                    Some(n) => format!("no pipeline `{n}` here (pipelines: {})", names.join(", ")),
                    None => format!("name its pipeline with `pipeline:` (pipelines: {})", names.join(", ")),
                };
                eprintln!("error: {}: {why}", file.display());
                return Err(EXIT_INVALID);
            };
            let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
            suites[k].1.extend(tf.tests.into_iter().map(|t| (t, base.clone())));
        }
    }
    Ok(suites)
}

/// `weir test PATH [--select EXPR] [--junit FILE]`.
pub(super) async fn test_cmd(
    path: &Path,
    select: &[String],
    junit: Option<&Path>,
    vars: &VarArgs,
    cache: Option<&dyn compile::SchemaCache>,
) -> i32 {
    let plans = match compile_path(path, vars, cache).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let suites = match suites(&plans, false) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let chosen = |t: &TestCase| {
        select.is_empty()
            || select.iter().any(|s| {
                t.name.contains(s.as_str()) || t.given.contains_key(s.as_str()) || t.expect.contains_key(s.as_str())
            })
    };
    let mut results: Vec<(&str, TestOutcome)> = Vec::new();
    for (plan, tests) in &suites {
        for (t, base) in tests.iter().filter(|(t, _)| chosen(t)) {
            let mut o = run::fixtures::run_test(plan, t, base).await;
            // A fixture can hold a `${env:…}` value: it is shown as `***`, in the JUnit file too.
            o.name = plan.secrets.redact(&o.name);
            for f in &mut o.failures {
                *f = plan.secrets.redact(f);
            }
            if o.failures.is_empty() {
                outln!("ok    {} · {} ({} ms)", plan.pipeline, o.name, o.ms);
            } else {
                outln!("FAIL  {} · {} ({} ms)", plan.pipeline, o.name, o.ms);
                for f in &o.failures {
                    outln!("  {}", f.replace('\n', "\n  "));
                }
            }
            results.push((plan.pipeline.as_str(), o));
        }
    }
    let failed = results.iter().filter(|(_, o)| !o.failures.is_empty()).count();
    outln!("{} test{}, {failed} failed", results.len(), if results.len() == 1 { "" } else { "s" });
    if let Some(file) = junit
        && let Err(e) = std::fs::write(file, junit_xml(&results))
    {
        eprintln!("error: cannot write {}: {e}", file.display());
        return EXIT_FAILED;
    }
    if failed > 0 { EXIT_FAILED } else { EXIT_OK }
}

fn xml_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// JUnit XML: a suite per pipeline, a case per test, its failures in one `<failure>`.
fn junit_xml(results: &[(&str, TestOutcome)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"weir test\">\n");
    let mut pipelines: Vec<&str> = results.iter().map(|(p, _)| *p).collect();
    pipelines.dedup();
    for p in pipelines {
        let cases: Vec<&TestOutcome> = results.iter().filter(|(q, _)| *q == p).map(|(_, o)| o).collect();
        let failures = cases.iter().filter(|o| !o.failures.is_empty()).count();
        let secs: f64 = cases.iter().map(|o| o.ms as f64 / 1000.0).sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{secs:.3}\">",
            xml_escape(p),
            cases.len()
        );
        for o in cases {
            let _ = write!(
                s,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(p),
                xml_escape(&o.name),
                o.ms as f64 / 1000.0
            );
            if o.failures.is_empty() {
                s.push_str("/>\n");
            } else {
                let first = o.failures[0].lines().next().unwrap_or_default();
                let _ = writeln!(
                    s,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml_escape(first),
                    xml_escape(&o.failures.join("\n"))
                );
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}
