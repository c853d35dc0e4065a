//! Loads: a task's `load:` resolved to a `LoadPlan`, and the checks that need the schema of
//! what it loads (merge keys, storable types, partition columns, incremental feeds, targets).

use super::*;

impl Compiler<'_> {
    /// A `load:` task: its input, store, directory and writer settings.
    pub(super) fn draft_load(
        &mut self,
        name: &str,
        l: &spec::Load,
        stores: &indexmap::IndexMap<String, Arc<Store>>,
        names: &indexmap::IndexSet<&str>,
        loads: &HashSet<&str>,
    ) -> DraftKind {
        let p = self.p;
        let before = self.diags.len();
        let broken = |this: &Self| this.diags.len() > before;
        let from_path = ypath!["tasks", name, "load", "from"];
        if l.from == name {
            self.diags.push(p.diag_value(
                "unknown-task",
                &from_path,
                l.from.len(),
                format!("task `{name}` loads from itself"),
            ));
        } else if loads.contains(l.from.as_str()) {
            let from = p.spec.tasks[&l.from].load.as_ref().map(|x| x.from.clone()).unwrap_or_default();
            self.diags.push(
                p.diag_value(
                    "unknown-task",
                    &from_path,
                    l.from.len(),
                    format!("`{}` is a load: loads write files and have no table", l.from),
                )
                .help(format!("load from the task it loads from, `{from}`")),
            );
        } else if !names.contains(l.from.as_str()) {
            self.diags.push(
                p.diag_value(
                    "unknown-task",
                    &from_path,
                    l.from.len(),
                    format!("`from` names unknown task `{}`", l.from),
                )
                .maybe_help(did_you_mean(&l.from, names.iter().copied().filter(|n| !loads.contains(n)))),
            );
        }
        let store = stores.get(&l.store).cloned();
        let database = self.databases.get(&l.store).cloned();
        let base = ypath!["tasks", name, "load"];
        if store.is_none()
            && database.is_none()
            && !p.spec.stores.contains_key(&l.store)
            && !p.broken_stores.contains(&l.store)
        {
            self.diags.push(self.unknown_store(name, "load", &l.store));
        }
        let rel = match (&database, &l.path, &l.table) {
            (Some(_), _, None) => {
                self.diags.push(
                    p.diag_key(
                        "table",
                        &base.key("store"),
                        format!("`{}` is a database store: a load into it needs `table`", l.store),
                    )
                    .help("name the table, e.g. `table: analytics.orders` (created when it does not exist)"),
                );
                String::new()
            }
            (Some(_), Some(path), Some(_)) => {
                self.diags.push(
                    p.diag_value(
                        "table",
                        &base.key("path"),
                        path.len(),
                        "a load into a database table takes `table`, not `path`",
                    )
                    .help("remove `path`"),
                );
                String::new()
            }
            (Some(_), None, Some(_)) => {
                // File settings mean nothing to a table.
                for key in ["format", "compression", "compression_level", "row_group_rows", "max_rows_per_file"] {
                    if p.spans.get(&base.key(key)).is_some() {
                        self.diags.push(
                            p.diag_key(
                                "table",
                                &base.key(key),
                                format!("`{key}` applies to file outputs, not to a database table"),
                            )
                            .help(format!("remove `{key}`")),
                        );
                    }
                }
                String::new()
            }
            (None, _, Some(table)) => {
                if store.is_some() {
                    self.diags.push(
                        p.diag_value(
                            "table",
                            &base.key("table"),
                            table.len(),
                            format!("`{}` is a file store: `table` applies to database stores", l.store),
                        )
                        .help("write the files with `path: some/dir/`, or load into a postgres:// store"),
                    );
                }
                String::new()
            }
            (None, path, None) => {
                let path = path.as_deref().unwrap_or_default();
                if store.is_some() && l.path.is_none() {
                    self.diags.push(
                        p.diag_key("path", &base.key("store"), "a load into a file store needs `path`")
                            .help("name a directory inside the store, e.g. `path: marts/orders/`; the load owns it and replaces its content"),
                    );
                }
                store_dir(path).unwrap_or_else(|| {
                    if l.path.is_some() {
                        self.diags.push(
                            p.diag_value("path", &base.key("path"), path.len(), format!("invalid load path `{path}`"))
                                .help("name a directory inside the store, e.g. `marts/orders/`; the load owns it and replaces its content"),
                        );
                    }
                    String::new()
                })
            }
        };
        if database.is_none() && l.on_schema_change.is_some() {
            self.diags.push(
                p.diag_key("table", &base.key("on_schema_change"), "`on_schema_change` applies to database tables")
                    .help("remove it: a file output's columns change with `--full-refresh`"),
            );
        }
        for (k, col) in l.partition_by.iter().enumerate() {
            if l.partition_by[..k].contains(col) {
                self.diags.push(p.diag_value(
                    "partition",
                    &ypath!["tasks", name, "load", "partition_by"].index(k),
                    col.len(),
                    format!("`{col}` is listed twice in `partition_by`"),
                ));
            }
        }
        if let Some(level) = l.compression_level {
            let range = match l.compression {
                spec::OutputCompression::Zstd => Some(("zstd", 1..=22)),
                spec::OutputCompression::Gzip => Some(("gzip", 0..=10)),
                _ => None,
            };
            let path = ypath!["tasks", name, "load", "compression_level"];
            match range {
                None => self.diags.push(
                    p.diag_key("compression", &path, "`compression_level` applies to `zstd` and `gzip` only")
                        .help("remove `compression_level`, or set `compression: zstd`"),
                ),
                Some((codec, r)) if !r.contains(&level) => self.diags.push(p.diag_value(
                    "compression",
                    &path,
                    level.to_string().len(),
                    format!("`compression_level` {level} is out of range for {codec}: {}–{}", r.start(), r.end()),
                )),
                Some(_) => {}
            }
        }
        if l.format == spec::OutputFormat::Delta && l.max_rows_per_file.is_some() {
            self.diags.push(
                p.diag_key(
                    "format",
                    &ypath!["tasks", name, "load", "max_rows_per_file"],
                    "`max_rows_per_file` applies to Parquet outputs: `deltalake` sizes a Delta table's files itself",
                )
                .help("remove `max_rows_per_file`, or write `format: parquet`"),
            );
        }
        if broken(self) {
            return DraftKind::Broken;
        }
        let target = match (database, store, &l.table) {
            (Some(db), _, Some(table)) => LoadTarget::Table(TableTarget {
                store: db,
                table: table.clone(),
                on_schema_change: l.on_schema_change.unwrap_or_default(),
            }),
            (None, Some(store), None) => LoadTarget::Files(FilesTarget {
                store,
                path: rel,
                format: l.format,
                compression: l.compression,
                compression_level: l.compression_level.unwrap_or(match l.compression {
                    spec::OutputCompression::Gzip => DEFAULT_GZIP_LEVEL,
                    _ => DEFAULT_ZSTD_LEVEL,
                }),
                row_group_rows: l.row_group_rows.unwrap_or(DEFAULT_ROW_GROUP_ROWS).max(1),
                max_rows_per_file: l.max_rows_per_file.unwrap_or(DEFAULT_MAX_ROWS_PER_FILE).max(1),
            }),
            _ => return DraftKind::Broken,
        };
        DraftKind::Load(LoadPlan {
            from: l.from.clone(),
            mode: l.mode,
            partition_by: l.partition_by.clone(),
            keys: l.keys.as_ref().map(spec::Columns::to_vec).unwrap_or_default(),
            order_by: l.order_by.as_ref().map(spec::Columns::to_vec).unwrap_or_default(),
            delete_when: l.delete_when.clone(),
            target,
        })
    }

    /// Every load checked against the schema of what it loads (merge keys, storable types,
    /// partition columns); its schema is what it stores.
    pub(super) fn plan_loads(
        &mut self,
        state: &SessionState,
        g: &TaskGraph,
        schemas: &mut HashMap<NodeIndex, SchemaRef>,
    ) {
        let TaskGraph { graph, index, order } = g;
        for &i in order {
            if let DraftKind::Load(l) = &graph[i].kind {
                let Some(input) = index.get(&l.from).and_then(|j| schemas.get(j)).cloned() else { continue };
                let name = graph[i].name.clone();
                let merge_ok = self.check_merge(state, &name, l, &input);
                let storable = self.check_storable(&name, l, &input);
                if self.check_partitions(&name, l, &input) && merge_ok && storable {
                    // The load's schema is what it stores.
                    let stored = Arc::new(Schema::new(
                        input
                            .fields()
                            .iter()
                            .map(|f| match l.files().map(|o| types::stored_type(f.data_type(), o.format)) {
                                Some(Ok(Some(t))) => Arc::new(f.as_ref().clone().with_data_type(t)),
                                _ => f.clone(),
                            })
                            .collect::<Vec<_>>(),
                    ));
                    schemas.insert(i, stored);
                }
            }
        }
    }

    /// What `mode` needs and what only `merge` uses: known without any schema, so reported
    /// even when the load's input has problems of its own.
    pub(super) fn check_mode(&mut self, name: &str, l: &spec::Load) {
        let p = self.p;
        let base = ypath!["tasks", name, "load"];
        let merge = l.mode == LoadMode::Merge;
        if merge && l.keys.as_ref().is_none_or(|k| k.to_vec().is_empty()) {
            self.diags.push(
                p.diag_value("merge", &base.key("mode"), 5, "`mode: merge` needs `keys`")
                    .help("name the column(s) that identify a row, e.g. `keys: [order_id]`"),
            );
        }
        if l.mode == LoadMode::ReplacePartitions && l.partition_by.is_empty() {
            self.diags.push(
                p.diag_value(
                    "replace-partitions",
                    &base.key("mode"),
                    18,
                    "`mode: replace_partitions` needs `partition_by`",
                )
                .help("name the column(s) whose values make the partitions, e.g. `partition_by: [day]`"),
            );
        }
        for (key, list) in [("keys", &l.keys), ("order_by", &l.order_by)] {
            if list.as_ref().is_some_and(|c| !c.to_vec().is_empty()) && !merge {
                self.diags.push(
                    p.diag_key("merge", &base.key(key), format!("`{key}` is only used by `mode: merge`"))
                        .help("set `mode: merge`, or remove it"),
                );
            }
        }
    }

    /// Keys, `order_by` and `delete_when` name real columns and appear only with `mode: merge`;
    /// `replace_partitions` has partitions.
    pub(super) fn check_merge(&mut self, state: &SessionState, name: &str, l: &LoadPlan, input: &SchemaRef) -> bool {
        let p = self.p;
        let before = self.diags.len();
        let base = ypath!["tasks", name, "load"];
        let cols: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        let merge = l.mode == LoadMode::Merge;
        for (key, list) in [("keys", &l.keys), ("order_by", &l.order_by)] {
            if !list.is_empty() && !merge {
                continue; // reported by `check_mode`
            }
            for (k, col) in list.iter().enumerate() {
                if !cols.contains(&col.as_str()) {
                    let path = if p.spec.tasks[name]
                        .load
                        .as_ref()
                        .and_then(|x| if key == "keys" { x.keys.as_ref() } else { x.order_by.as_ref() })
                        .is_some_and(|c| matches!(c, spec::Columns::Many(_)))
                    {
                        base.key(key).index(k)
                    } else {
                        base.key(key)
                    };
                    self.diags.push(
                        p.diag_value(
                            "merge",
                            &path,
                            col.len(),
                            format!("`{key}` column `{col}` is not in `{}`", l.from),
                        )
                        .maybe_help(
                            did_you_mean(col, cols.iter().copied())
                                .or_else(|| Some(format!("`{}` has: {}", l.from, cols.join(", ")))),
                        ),
                    );
                } else if key == "keys" && l.keys[..k].contains(col) {
                    self.diags.push(p.diag_key("merge", &base.key(key), format!("`{col}` is listed twice in `keys`")));
                }
            }
        }
        if let Some(cond) = &l.delete_when {
            let path = base.key("delete_when");
            if !merge {
                self.diags.push(
                    p.diag_key("merge", &path, "`delete_when` is only used by `mode: merge`")
                        .help("set `mode: merge`, or remove it"),
                );
            } else if let Err(msg) = sql::check_predicate(state, cond, input) {
                self.diags.push(
                    p.diag_value("delete-when", &path, cond.len(), format!("invalid `delete_when`: {msg}"))
                        .help(format!("a SQL condition on the columns of `{}`, e.g. `op = 'D'`", l.from)),
                );
            }
        }
        self.diags.len() == before
    }

    /// Rules between incremental extracts and the loads they feed: a load fed by one must keep
    /// what earlier runs wrote (not `overwrite`); a lookback re-reads rows, so every load it
    /// feeds must merge them by keys.
    pub(super) fn check_incremental_loads(
        &mut self,
        graph: &DiGraph<Draft, Edge>,
        order: &[NodeIndex],
        incremental: &HashMap<NodeIndex, IncrementalPlan>,
    ) {
        let p = self.p;
        if incremental.is_empty() {
            return;
        }
        let sources = plan::incremental_sources(graph, order, |i| incremental.contains_key(&i), |d| d.position);
        for &i in order {
            let DraftKind::Load(l) = &graph[i].kind else { continue };
            let name = graph[i].name.clone();
            let Some(srcs) = sources.get(&i) else { continue };
            let names: Vec<String> = srcs.iter().map(|s| format!("`{}`", graph[*s].name)).collect();
            if l.mode == LoadMode::Overwrite {
                self.diags.push(
                    p.diag_value(
                        "incremental",
                        &ypath!["tasks", &name, "load", "mode"],
                        9,
                        format!(
                            "load `{name}` reads only new data (through incremental {}) but `mode: overwrite` would replace everything with it",
                            names.join(", ")
                        ),
                    )
                    .help("use `mode: append`, `merge` or `replace_partitions`; `weir run --full-refresh` rebuilds from all input"),
                );
            }
            for s in srcs {
                let lookback = incremental[s].watermark.as_ref().is_some_and(|w| w.lookback.is_some());
                if lookback && (l.mode != LoadMode::Merge || l.keys.is_empty()) {
                    let ext = graph[*s].name.clone();
                    self.diags.push(
                        p.diag_key(
                            "lookback",
                            &ypath!["tasks", &ext, "extract", "incremental", "watermark", "lookback"],
                            format!(
                                "a lookback reads rows again, but load `{name}` would {} them",
                                if l.mode == LoadMode::Append { "append" } else { "write" }
                            ),
                        )
                        .help(format!("give load `{name}` `mode: merge` and `keys`, so rows read again replace themselves; or remove `lookback`")),
                    );
                }
            }
        }
    }

    /// Every column has a type the output format can store (converted or as it is).
    pub(super) fn check_storable(&mut self, name: &str, l: &LoadPlan, input: &SchemaRef) -> bool {
        let p = self.p;
        let mut ok = true;
        // A table's types are checked against the table (`check_tables`).
        let Some(files) = l.files() else { return true };
        for f in input.fields() {
            if let Err(why) = types::stored_type(f.data_type(), files.format) {
                ok = false;
                self.diags.push(
                    p.diag_key(
                        "load-type",
                        &ypath!["tasks", name, "load", "format"],
                        format!("column `{}` of `{}` cannot be stored in a Delta table: {why}", f.name(), l.from),
                    )
                    .help(format!("cast it in a transform (`CAST({} AS …)`), or write `format: parquet`", f.name())),
                );
            }
        }
        ok
    }

    pub(super) fn check_partitions(&mut self, name: &str, l: &LoadPlan, input: &SchemaRef) -> bool {
        let p = self.p;
        let mut ok = true;
        let cols: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        for (k, col) in l.partition_by.iter().enumerate() {
            if !cols.contains(&col.as_str()) {
                ok = false;
                self.diags.push(
                    p.diag_value(
                        "partition",
                        &ypath!["tasks", name, "load", "partition_by"].index(k),
                        col.len(),
                        format!("`partition_by` column `{col}` is not in `{}`", l.from),
                    )
                    .maybe_help(
                        did_you_mean(col, cols.iter().copied())
                            .or_else(|| Some(format!("`{}` has: {}", l.from, cols.join(", ")))),
                    ),
                );
            }
        }
        for (k, col) in l.partition_by.iter().enumerate() {
            let Ok(f) = input.field_with_name(col) else { continue };
            if l.files().is_some_and(|o| o.format == spec::OutputFormat::Parquet)
                && !types::partitionable(f.data_type())
            {
                ok = false;
                self.diags.push(
                    p.diag_value(
                        "partition",
                        &ypath!["tasks", name, "load", "partition_by"].index(k),
                        col.len(),
                        format!(
                            "`partition_by` column `{col}` is {}: a partition directory holds a scalar value as text",
                            types::sql_name(f.data_type())
                        ),
                    )
                    .help("partition by a text, number, boolean, date or timestamp column (computed in a transform if need be)"),
                );
            }
        }
        if ok && l.files().is_some() && !l.partition_by.is_empty() && l.partition_by.len() >= cols.len() {
            ok = false;
            self.diags.push(p.diag_key(
                "partition",
                &ypath!["tasks", name, "load", "partition_by"],
                "`partition_by` lists every column: no columns would be left in the files",
            ));
        }
        ok
    }

    pub(super) fn check_load_targets(&mut self, drafts: &[Draft]) {
        let p = self.p;
        let targets: Vec<(&str, &LoadPlan)> = drafts
            .iter()
            .filter_map(|d| match &d.kind {
                DraftKind::Load(l) => Some((d.name.as_str(), l)),
                _ => None,
            })
            .collect();
        for (k, (name, l)) in targets.iter().enumerate() {
            for (other, o) in &targets[..k] {
                let clash = match (&l.target, &o.target) {
                    (LoadTarget::Files(l), LoadTarget::Files(o)) => {
                        let same_store = Arc::ptr_eq(&l.store, &o.store) || l.store.display_url == o.store.display_url;
                        let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
                        (same_store && (nested(&l.path, &o.path) || nested(&o.path, &l.path))).then(|| {
                            (
                                "path",
                                l.path.clone(),
                                l.store.name.clone(),
                                "each load owns its directory: give them separate paths",
                            )
                        })
                    }
                    (LoadTarget::Table(l), LoadTarget::Table(o)) => {
                        (l.store.display_url() == o.store.display_url() && l.table == o.table).then(|| {
                            (
                                "table",
                                l.table.clone(),
                                l.store.name().to_string(),
                                "each load owns its table: give them separate tables",
                            )
                        })
                    }
                    _ => None,
                };
                if let Some((key, at, store, help)) = clash {
                    self.diags.push(
                        p.diag_value(
                            "load-target",
                            &ypath!["tasks", *name, "load", key],
                            at.len(),
                            format!("loads `{other}` and `{name}` write to the same place (`{at}` in store `{store}`)"),
                        )
                        .help(help),
                    );
                }
            }
        }
    }

    /// Every database table a load writes, checked against what it loads: the table's
    /// columns and types as the server describes them (a missing table: that each column
    /// has a type to create it with). Nothing is written.
    pub(super) async fn check_tables(&mut self, g: &TaskGraph, schemas: &HashMap<NodeIndex, SchemaRef>) {
        let p = self.p;
        let TaskGraph { graph, order, .. } = g;
        for &i in order {
            let DraftKind::Load(l) = &graph[i].kind else { continue };
            let LoadTarget::Table(t) = &l.target else { continue };
            let Some(input) = schemas.get(&i) else { continue };
            let name = &graph[i].name;
            let at = ypath!["tasks", name, "load", "table"];
            let add = t.on_schema_change == spec::OnSchemaChange::AddColumns;
            match t.store.target_problems(&t.table, input, add).await {
                Ok(problems) => {
                    for problem in problems {
                        let help = if problem.starts_with("the table has no column") {
                            "add the columns to the table, or set `on_schema_change: add_columns` to have the load add them"
                        } else if problem.starts_with("column") {
                            "cast the column in a transform to a type the table holds, or alter the table"
                        } else {
                            "load into another table, or change this one as the message says"
                        };
                        self.diags.push(
                            p.diag_value(
                                "load-table",
                                &at,
                                t.table.len(),
                                format!(
                                    "load `{name}` cannot write table `{}` of `{}`: {problem}",
                                    t.table,
                                    t.store.name()
                                ),
                            )
                            .help(help),
                        );
                    }
                }
                Err(e) => self.diags.push(
                    p.diag_value(
                        "store",
                        &at,
                        t.table.len(),
                        format!("load `{name}`: table `{}` of `{}` cannot be checked: {e}", t.table, t.store.name()),
                    )
                    .help(format!("weir validate reads the table's columns from {}", t.store.display_url())),
                ),
            }
        }
    }
}
