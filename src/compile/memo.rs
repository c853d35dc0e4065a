//! Queries planned by earlier compiles of a pipeline, kept in the schema cache (the state
//! store) so that re-validating replans only what changed. An entry is keyed by a 128-bit hash
//! of what planning reads — the query's text (`${vars}` substituted) and the name and schema of
//! every table it reads — under the build of weir that made it: a query whose text or whose
//! inputs' schemas changed misses, and is planned; everything downstream of a changed schema
//! misses in turn. Only queries that planned without a problem are kept, and only what
//! round-trips exactly (a schema whose types print and parse back to themselves, without
//! metadata). Queries reading a database extract are always planned (what they read of it is
//! pushed to the server, and is not kept here).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::SchemaCache;
use super::lineage::{Dep, How};

/// The memo of one pipeline, as stored.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Memo {
    /// The build that wrote it (version, executable size and time): another build may plan
    /// differently, so its entries are not read.
    build: String,
    /// By query key: the tables the query reads, as parsed.
    #[serde(default)]
    parsed: HashMap<u128, Vec<String>>,
    /// By plan key: the query's output and lineage.
    #[serde(default)]
    planned: HashMap<u128, MemoPlan>,
}

/// A planned query: its output columns (name, type as printed, nullable) and their lineage.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct MemoPlan {
    schema: Vec<(String, String, bool)>,
    columns: Vec<Vec<(How, String, String)>>,
    rows: Vec<(How, String, String)>,
}

/// What one compile used and added.
#[derive(Debug, Default)]
pub(super) struct MemoUse {
    /// As read.
    old: Memo,
    /// The keys of `old` this compile used.
    used_parsed: std::collections::HashSet<u128>,
    used_planned: std::collections::HashSet<u128>,
    /// What this compile parsed and planned anew.
    new: Memo,
    /// Entries planned (or parsed) in this compile rather than read.
    pub misses: usize,
    /// There is a cache to save to: keep what is planned.
    enabled: bool,
    /// Schemas read, by their stored form: tasks that share a schema share one copy.
    schemas: HashMap<Vec<(String, String, bool)>, SchemaRef>,
}

impl MemoUse {
    /// The memo of the pipeline file at `key` in `cache` (empty when there is none or another
    /// build wrote it).
    pub fn load(cache: &dyn SchemaCache, key: &str) -> MemoUse {
        MemoUse::from_bytes(cache.schema(key))
    }

    /// The memo stored as `bytes` (see [`MemoUse::load`]).
    pub fn from_bytes(bytes: Option<Vec<u8>>) -> MemoUse {
        let build = build_id();
        let old = bytes
            .and_then(|bytes| serde_json::from_slice::<Memo>(&bytes).ok())
            .filter(|m| m.build == build)
            .unwrap_or_default();
        MemoUse { old, new: Memo { build, ..Default::default() }, enabled: true, ..Default::default() }
    }

    /// Store what this compile used and added, when it added anything. Of the entries it did
    /// not use (an edit undone hits them) up to [`KEPT_UNUSED`] are kept. The memo is freed on
    /// another thread: a large one takes milliseconds the compile's caller need not wait.
    pub fn save(self, cache: &dyn SchemaCache, key: &str) {
        if self.misses == 0 || !self.enabled {
            free_elsewhere(self);
            return;
        }
        let MemoUse { old, used_parsed, used_planned, mut new, .. } = self;
        let (mut spare_parsed, mut spare_planned) = (KEPT_UNUSED, KEPT_UNUSED);
        new.parsed.extend(old.parsed.into_iter().filter(|(k, _)| {
            used_parsed.contains(k) || spare_parsed.checked_sub(1).map(|n| spare_parsed = n).is_some()
        }));
        new.planned.extend(old.planned.into_iter().filter(|(k, _)| {
            used_planned.contains(k) || spare_planned.checked_sub(1).map(|n| spare_planned = n).is_some()
        }));
        if let Ok(bytes) = serde_json::to_vec(&new) {
            cache.put_schema(key, &bytes);
        }
        free_elsewhere(new);
    }

    /// The tables a query reads, from an earlier parse of the same text.
    pub fn parsed(&mut self, sql: &str) -> Option<&[String]> {
        let k = query_key(sql);
        let tables = self.old.parsed.get(&k)?;
        self.used_parsed.insert(k);
        Some(tables)
    }

    pub fn add_parsed(&mut self, sql: &str, tables: Vec<String>) {
        self.misses += 1;
        if !self.enabled {
            return;
        }
        self.new.parsed.insert(query_key(sql), tables);
    }

    /// An earlier plan of the query under `key` (see [`plan_key`]).
    pub fn planned(&mut self, key: u128) -> Option<(SchemaRef, Vec<Vec<Dep>>, Vec<Dep>)> {
        let m = self.old.planned.get(&key)?;
        let schema = match self.schemas.get(&m.schema) {
            Some(s) => s.clone(),
            None => {
                let mut fields = Vec::with_capacity(m.schema.len());
                for (name, t, nullable) in &m.schema {
                    fields.push(Field::new(name, t.parse::<DataType>().ok()?, *nullable));
                }
                let s = std::sync::Arc::new(Schema::new(fields));
                self.schemas.insert(m.schema.clone(), s.clone());
                s
            }
        };
        let deps = |v: &[(How, String, String)]| -> Vec<Dep> {
            v.iter().map(|(how, task, column)| Dep { task: task.clone(), column: column.clone(), how: *how }).collect()
        };
        let columns = m.columns.iter().map(|c| deps(c)).collect();
        let rows = deps(&m.rows);
        self.used_planned.insert(key);
        Some((schema, columns, rows))
    }

    /// Keep a plan made in this compile, if it round-trips exactly.
    pub fn add_planned(&mut self, key: u128, schema: &Schema, columns: &[Vec<Dep>], rows: &[Dep]) {
        self.misses += 1;
        if !self.enabled || !schema.metadata().is_empty() {
            return;
        }
        let mut fields = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let printed = f.data_type().to_string();
            if !f.metadata().is_empty() || printed.parse::<DataType>().ok().as_ref() != Some(f.data_type()) {
                return;
            }
            fields.push((f.name().clone(), printed, f.is_nullable()));
        }
        let deps = |v: &[Dep]| -> Vec<(How, String, String)> {
            v.iter().map(|d| (d.how, d.task.clone(), d.column.clone())).collect()
        };
        let plan = MemoPlan { schema: fields, columns: columns.iter().map(|c| deps(c)).collect(), rows: deps(rows) };
        self.new.planned.insert(key, plan);
    }
}

/// Drop `value` on a thread of its own (here if none can be started).
fn free_elsewhere<T: Send + 'static>(value: T) {
    // A thread that cannot start drops its closure, and with it the value.
    let _ = std::thread::Builder::new().name("weir-free".into()).spawn(move || drop(value));
}

/// Entries of each kind a compile did not use that are kept for the next (the rest are
/// dropped): enough for the edits of a working session, little beside a large pipeline's own.
const KEPT_UNUSED: usize = 1000;

/// The build of weir running: its version and its executable's size and modification time.
fn build_id() -> String {
    let exe = std::env::current_exe().ok().and_then(|p| std::fs::metadata(p).ok());
    let stamp = exe
        .map(|m| {
            let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
            format!("{} {}", m.len(), t.as_nanos())
        })
        .unwrap_or_default();
    format!("{} {stamp}", env!("CARGO_PKG_VERSION"))
}

/// 128 bits of hash over what `feed` writes: two SipHash passes, each behind its own prefix.
fn key128(feed: impl Fn(&mut std::collections::hash_map::DefaultHasher)) -> u128 {
    let mut out = 0u128;
    for prefix in [0x5au8, 0xa5] {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u8(prefix);
        feed(&mut h);
        out = (out << 64) | h.finish() as u128;
    }
    out
}

/// The key of a query's text.
pub(super) fn query_key(sql: &str) -> u128 {
    key128(|h| sql.hash(h))
}

/// The key of a query's plan: its text and the name and schema of each table it reads.
pub(super) fn plan_key(sql: &str, inputs: &[(&str, &Schema)]) -> u128 {
    key128(|h| {
        sql.hash(h);
        inputs.len().hash(h);
        for (name, schema) in inputs {
            name.hash(h);
            schema.hash(h);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_text_and_with_any_input_schema() {
        let a = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        let b = Schema::new(vec![Field::new("x", DataType::Int32, true)]);
        let c = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
        let k = plan_key("SELECT x FROM t", &[("t", &a)]);
        assert!(k >> 64 != 0 && k as u64 != 0 && (k >> 64) as u64 != k as u64);
        assert_eq!(k, plan_key("SELECT x FROM t", &[("t", &a)]));
        assert_ne!(k, plan_key("SELECT x FROM t ", &[("t", &a)]));
        assert_ne!(k, plan_key("SELECT x FROM t", &[("t", &b)]));
        assert_ne!(k, plan_key("SELECT x FROM t", &[("t", &c)]));
        assert_ne!(k, plan_key("SELECT x FROM t", &[("u", &a)]));
        assert_ne!(query_key("SELECT 1"), query_key("SELECT 2"));
    }

    #[test]
    fn only_what_round_trips_is_kept() {
        use datafusion::arrow::datatypes::TimeUnit;
        let mut m = MemoUse { enabled: true, ..Default::default() };
        let types = [
            DataType::Int64,
            DataType::Decimal128(12, 2),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Date32,
            DataType::Utf8View,
            DataType::List(std::sync::Arc::new(Field::new("item", DataType::Utf8, true))),
        ];
        let schema = Schema::new(
            types
                .iter()
                .enumerate()
                .map(|(k, t)| Field::new(format!("c{k}"), t.clone(), k % 2 == 0))
                .collect::<Vec<_>>(),
        );
        let lineage = vec![vec![Dep { task: "t".into(), column: "x".into(), how: How::Copy }]; types.len()];
        m.add_planned(7, &schema, &lineage, &[]);
        // Through its stored form (keys that are 128-bit numbers).
        let bytes = serde_json::to_vec(&m.new).unwrap();
        m.old = serde_json::from_slice(&bytes).unwrap();
        let (back, columns, rows) = m.planned(7).expect("kept");
        assert_eq!(*back, schema);
        assert_eq!(columns, lineage);
        assert!(rows.is_empty());
        // Metadata does not round-trip: not kept.
        let mut m = MemoUse { enabled: true, ..Default::default() };
        let with_meta = Schema::new(vec![
            Field::new("x", DataType::Int64, true).with_metadata([("k".to_string(), "v".to_string())].into()),
        ]);
        m.add_planned(7, &with_meta, &[vec![]], &[]);
        assert!(m.new.planned.is_empty());
    }
}
