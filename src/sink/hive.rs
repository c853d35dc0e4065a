//! Hive-style partition directories (`region=north/day=2026-11-01/`), written as Hive and Spark
//! write them so that DuckDB, pyarrow, pandas, Polars and Spark read every value back as it was:
//!
//! - a NULL value is the directory `__HIVE_DEFAULT_PARTITION__` (read back as NULL); an empty
//!   string is `column=` (read back as `''`);
//! - characters that cannot stand in a path segment (`/`, `=`, `%`, `:`, `#`, `?`, control
//!   characters and the rest of Hive's set, plus those object stores advise against) are
//!   percent-escaped: `a=b/c` is `region=a%3Db%2Fc`;
//! - dates are `2026-11-01`, timestamps `2026-11-01 08:30:00[.fraction]` (Hive's text form,
//!   escaped: `08%3A30%3A00`), booleans `true`/`false`, numbers as SQL prints them.
//!
//! The partitioned writer (`sink::partitioned`) names a directory by text of a shape no value
//! can break and that the object store client passes through as it is — [`WRITTEN_NULL`] for
//! NULL, else `v` and the value's UTF-8 bytes in hex ([`writer_columns`]) — and the
//! directories are renamed to their Hive names when the files are staged ([`hive_rel`]).

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::logical_expr::{Expr, cast, col, lit, when};
use percent_encoding::percent_decode_str;

/// The directory value of NULL, as Hive, Spark and Delta name it.
pub const NULL_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// What the writer is given for NULL (any other value is `v` + hex, never this).
const WRITTEN_NULL: &str = "n";

/// Whether a character is escaped in partition values and names: Hive's
/// `FileUtils.escapePathName` set (control characters, `"#%'*/:=?\\{[]^`, DEL), and the
/// characters object stores advise against in keys (which the object store client would
/// otherwise escape on its own). Other characters, non-ASCII included, stay as they are.
fn escaped(c: char) -> bool {
    c.is_ascii_control() || "\"#%'*/:=?\\{}[]^`<>|~".contains(c)
}

/// A value (or column name) as it stands in a directory name.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if escaped(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A directory name's text as the value it stands for.
pub fn unescape(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `region=north/day=2024-01-01` → [(region, north), (day, 2024-01-01)], unescaped; the value
/// is `None` for [`NULL_VALUE`].
pub fn values(dir: &str) -> Vec<(String, Option<String>)> {
    dir.split('/')
        .filter_map(|seg| seg.split_once('='))
        .map(|(k, v)| (unescape(k), (v != NULL_VALUE).then(|| unescape(v))))
        .collect()
}

/// The columns of `schema` with each partition column replaced by the text the writer puts in
/// its directory name (see the module docs); the writer evaluates it on a directory's first row.
pub fn writer_columns(schema: &Schema, partition_by: &[String]) -> datafusion::error::Result<Vec<Expr>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let c = col(datafusion::common::Column::new_unqualified(f.name()));
            if !partition_by.contains(f.name()) {
                return Ok(c);
            }
            let text = match f.data_type() {
                DataType::Timestamp(..) => {
                    datafusion::functions::expr_fn::to_char(c.clone(), lit("%Y-%m-%d %H:%M:%S%.f"))
                }
                DataType::Dictionary(_, v) => cast(cast(c.clone(), v.as_ref().clone()), DataType::Utf8),
                _ => cast(c.clone(), DataType::Utf8),
            };
            let hex = datafusion::functions::expr_fn::encode(cast(text, DataType::Binary), lit("hex"));
            let written = when(c.is_null(), lit(WRITTEN_NULL))
                .otherwise(datafusion::functions::expr_fn::concat(vec![lit("v"), hex]))?;
            Ok(written.alias(f.name()))
        })
        .collect()
}

/// The Hive name of a directory segment the writer made (`region=v6e6f` → `region=no`), or
/// `None` when it is not one.
fn hive_segment(segment: &str) -> Option<String> {
    let (name, written) = segment.split_once('=')?;
    let value = if written == WRITTEN_NULL {
        NULL_VALUE.to_string()
    } else {
        let hex = written.strip_prefix('v')?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        escape(&String::from_utf8_lossy(&bytes))
    };
    // The writer's object store client escaped the name its own way: undo, then Hive's.
    Some(format!("{}={value}", escape(&unescape(name))))
}

/// The path a written file takes in the output (relative to the output directory): its first
/// `depth` directories renamed to their Hive names. Paths with fewer directories (an empty
/// file at the top) are returned as they are.
pub fn hive_rel(rel: &str, depth: usize) -> String {
    let parts: Vec<&str> = rel.split('/').collect();
    if depth == 0 || parts.len() <= depth {
        return rel.to_string();
    }
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    for (k, p) in parts.iter().enumerate() {
        match (k < depth).then(|| hive_segment(p)).flatten() {
            Some(h) => out.push(h),
            None => out.push(p.to_string()),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_escape_as_hive_does() {
        assert_eq!(escape("north"), "north");
        assert_eq!(escape("a=b/c"), "a%3Db%2Fc");
        assert_eq!(escape("100%"), "100%25");
        assert_eq!(escape("2026-01-01 08:30:00"), "2026-01-01 08%3A30%3A00");
        assert_eq!(escape("x\ty#?"), "x%09y%23%3F");
        assert_eq!(escape("münchen"), "münchen");
        assert_eq!(unescape("a%3Db%2Fc"), "a=b/c");
        assert_eq!(unescape("100%"), "100%");
    }

    #[test]
    fn written_directories_become_hive_directories() {
        // "a=b" is 61 3d 62
        assert_eq!(hive_rel("region=v613d62/part-0.parquet", 1), "region=a%3Db/part-0.parquet");
        assert_eq!(hive_rel("region=n/part-0.parquet", 1), "region=__HIVE_DEFAULT_PARTITION__/part-0.parquet");
        assert_eq!(hive_rel("region=v/part-0.parquet", 1), "region=/part-0.parquet");
        assert_eq!(hive_rel("a=v31/b=n/f.parquet", 2), "a=1/b=__HIVE_DEFAULT_PARTITION__/f.parquet");
        assert_eq!(hive_rel("part-empty.parquet", 1), "part-empty.parquet");
        assert_eq!(
            values("region=a%3Db/day=__HIVE_DEFAULT_PARTITION__"),
            vec![("region".to_string(), Some("a=b".to_string())), ("day".to_string(), None)]
        );
    }
}
