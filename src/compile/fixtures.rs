//! Tests' fixtures checked at compile time: every task a test gives or expects rows of
//! exists, every column its rows name is one of the task's, every fixture file exists — each
//! mistake located in the pipeline file, so that `weir validate` reports them.

use super::*;

impl Compiler<'_> {
    pub(super) fn check_tests(&mut self, g: &TaskGraph, schemas: &HashMap<NodeIndex, SchemaRef>) {
        let p = self.p;
        let names: Vec<&str> = g.graph.node_weights().map(|d| d.name.as_str()).collect();
        let base = p.source.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        for (k, t) in p.spec.tests.iter().enumerate() {
            let at = ypath!["tests"].index(k);
            for (side, fixtures) in [("given", &t.given), ("expect", &t.expect)] {
                for (task, fixture) in fixtures {
                    let path = at.key(side).key(task.as_str());
                    let Some(&i) = g.index.get(task) else {
                        self.diags.push(
                            p.diag_key("test", &path, format!("test `{}`: no task `{task}`", t.name))
                                .maybe_help(did_you_mean(task, names.iter().copied())),
                        );
                        continue;
                    };
                    let Some(schema) = schemas.get(&i) else { continue };
                    match fixture {
                        spec::Fixture::Rows(rows) => {
                            for (r, row) in rows.iter().enumerate() {
                                for column in row.keys() {
                                    if schema.index_of(column).is_err() {
                                        let cols: Vec<&str> =
                                            schema.fields().iter().map(|f| f.name().as_str()).collect();
                                        let help = did_you_mean(column, cols.iter().copied())
                                            .unwrap_or_else(|| format!("its columns: {}", cols.join(", ")));
                                        self.diags.push(
                                            p.diag_key(
                                                "test",
                                                &path.index(r).key(column.as_str()),
                                                format!("test `{}`: task `{task}` has no column `{column}`", t.name),
                                            )
                                            .help(help),
                                        );
                                    }
                                }
                            }
                        }
                        spec::Fixture::File(f) => {
                            let files: Vec<(&str, &String)> =
                                [("csv", &f.csv), ("json", &f.json), ("parquet", &f.parquet)]
                                    .into_iter()
                                    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                                    .collect();
                            match files.as_slice() {
                                [(kind, file)] => {
                                    if !base.join(file).is_file() {
                                        self.diags.push(p.diag_value(
                                            "test",
                                            &path.key(*kind),
                                            file.len(),
                                            format!("test `{}`: no file {}", t.name, base.join(file).display()),
                                        ));
                                    }
                                }
                                _ => self.diags.push(p.diag_key(
                                    "test",
                                    &path,
                                    format!("test `{}`: a fixture file is one of `csv`, `json` or `parquet`", t.name),
                                )),
                            }
                        }
                    }
                }
            }
        }
    }
}
