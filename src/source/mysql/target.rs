//! A MySQL/MariaDB table as a load target (`sink::table` writes it; compile checks it): the
//! table as `information_schema` describes it (columns, engine, unique keys), the type a new
//! column gets for an Arrow type, the Arrow type a load's column is cast to before it is
//! sent, and the text each value is sent as ([`Row`]): a line of `LOAD DATA`'s
//! tab-separated format, or a row of an `INSERT … VALUES` list.
//!
//! The server is given text, and text is exact for every type weir writes: integers and
//! decimals digit for digit, floats as the shortest text that reads back as the same number,
//! dates and times to the microsecond, bytes as hexadecimal. What the server would change
//! without an error is refused here: a fraction of a second the column does not keep (MySQL
//! rounds it), NaN and infinities (MySQL has none).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array, Float32Array,
    Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, ListArray, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::MyError;

/// A column of an existing table.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    pub name: String,
    /// `information_schema.columns.data_type`, lower case (`int`, `varchar`, `datetime`).
    pub data_type: String,
    /// The type as MySQL writes it (`decimal(12,2)`, `int(10) unsigned`, `varchar(20)`).
    pub sql_type: String,
    pub unsigned: bool,
    pub precision: u32,
    pub scale: u32,
    /// Fractional digits of seconds a `datetime`, `timestamp` or `time` column keeps.
    pub fraction: u32,
}

impl super::super::database::TargetColumn for TargetColumn {
    fn name(&self) -> &str {
        &self.name
    }
    fn sql_type(&self) -> &str {
        &self.sql_type
    }
}

/// An existing table.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub columns: Vec<TargetColumn>,
    /// The storage engine (`None`: a view).
    pub engine: Option<String>,
    /// The columns of each unique index (the primary key included).
    pub unique: Vec<Vec<String>>,
}

/// `table` (`name` or `database.name`, unquoted) as its database (`None`: the connection's)
/// and name.
pub fn table_parts(table: &str) -> (Option<&str>, &str) {
    match table.rsplit_once('.') {
        Some((db, name)) => (Some(db), name),
        None => (None, table),
    }
}

/// `table` as the server describes it; `None` when there is no such table.
pub async fn describe_table(conn: &mut Conn, table: &str) -> Result<Option<TargetTable>, MyError> {
    let (db, name) = table_parts(table);
    let engine: Option<(Option<String>,)> = conn
        .exec_first(
            "SELECT engine FROM information_schema.tables WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
            (db, name),
        )
        .await?;
    let Some((engine,)) = engine else { return Ok(None) };
    type Described = (String, String, String, Option<u64>, Option<u64>, Option<u64>);
    let rows: Vec<Described> = conn
        .exec(
            "SELECT column_name, LOWER(data_type), column_type, numeric_precision, numeric_scale, datetime_precision \
             FROM information_schema.columns WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
             ORDER BY ordinal_position",
            (db, name),
        )
        .await?;
    let columns = rows
        .into_iter()
        .map(|(name, data_type, sql_type, precision, scale, fraction)| TargetColumn {
            unsigned: sql_type.to_ascii_lowercase().contains("unsigned"),
            name,
            data_type,
            sql_type,
            precision: precision.unwrap_or(0) as u32,
            scale: scale.unwrap_or(0) as u32,
            fraction: fraction.unwrap_or(0) as u32,
        })
        .collect();
    let keys: Vec<(String, String)> = conn
        .exec(
            "SELECT index_name, column_name FROM information_schema.statistics \
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND non_unique = 0 \
             ORDER BY index_name, seq_in_index",
            (db, name),
        )
        .await?;
    let mut unique: Vec<(String, Vec<String>)> = Vec::new();
    for (index, column) in keys {
        match unique.last_mut() {
            Some((i, cols)) if *i == index => cols.push(column),
            _ => unique.push((index, vec![column])),
        }
    }
    Ok(Some(TargetTable { columns, engine, unique: unique.into_iter().map(|(_, c)| c).collect() }))
}

/// Whether a table of `engine` can roll a load back.
pub fn transactional(engine: &str) -> bool {
    engine.eq_ignore_ascii_case("InnoDB")
}

/// The MySQL type a new column of Arrow type `t` gets, or why there is none. A `key` column
/// of text or bytes gets a bounded type (an index cannot hold `longtext`).
pub fn column_type(t: &DataType, key: bool) -> Result<String, String> {
    use DataType::*;
    Ok(match t {
        // A column of NULLs only (a CSV column that is always empty): text.
        Null | Utf8 | LargeUtf8 | Utf8View => if key { "varchar(255)" } else { "longtext" }.into(),
        Boolean => "boolean".into(),
        Int8 => "tinyint".into(),
        Int16 => "smallint".into(),
        Int32 => "int".into(),
        Int64 => "bigint".into(),
        UInt8 => "tinyint unsigned".into(),
        UInt16 => "smallint unsigned".into(),
        UInt32 => "int unsigned".into(),
        UInt64 => "bigint unsigned".into(),
        Float16 | Float32 => "float".into(),
        Float64 => "double".into(),
        Decimal128(p, s) | Decimal256(p, s) if *s >= 0 && *p <= 65 && *s <= 30 => format!("decimal({p},{s})"),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => {
            if key { "varbinary(255)" } else { "longblob" }.into()
        }
        Date32 | Date64 => "date".into(),
        // A zoned timestamp is kept as its UTC time: `timestamp` ends in 2038.
        Timestamp(_, _) => "datetime(6)".into(),
        Time32(_) | Time64(_) => "time(6)".into(),
        Dictionary(_, v) => return column_type(v, key),
        List(f) | LargeList(f) if scalar_member(f.data_type()) => "json".into(),
        other => {
            return Err(format!("{} has no MySQL column type weir writes", crate::types::sql_name(other)));
        }
    })
}

/// A list member weir writes as a JSON value.
fn scalar_member(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Decimal128(_, _)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Date32
            | Timestamp(_, _)
            | Null
    )
}

/// The Arrow type of the values `column` holds (`mediumint`: the next wider type, checked
/// apart), or why weir does not write it.
fn native(column: &TargetColumn) -> Result<DataType, String> {
    use DataType::*;
    let u = column.unsigned;
    Ok(match column.data_type.as_str() {
        "tinyint" if u => UInt8,
        "tinyint" => Int8,
        "smallint" if u => UInt16,
        "smallint" => Int16,
        "mediumint" | "int" | "integer" if u => UInt32,
        "mediumint" | "int" | "integer" => Int32,
        "bigint" if u => UInt64,
        "bigint" => Int64,
        "float" => Float32,
        "double" | "real" => Float64,
        "decimal" | "numeric" if column.precision <= 38 => Decimal128(column.precision as u8, column.scale as i8),
        "decimal" | "numeric" => Decimal256(column.precision as u8, column.scale as i8),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" | "json" => Utf8,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Binary,
        "date" => Date32,
        "datetime" => Timestamp(TimeUnit::Microsecond, None),
        "timestamp" => Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "time" => Time64(TimeUnit::Microsecond),
        _ => return Err(format!("weir does not write into {} columns", column.sql_type)),
    })
}

/// The Arrow type a load's column of type `input` is cast to before its values are written as
/// text into `column`. `Err` says why `input` cannot be written into `column` as it is (a
/// narrowing or a change of meaning: weir never writes a value the column would hold
/// differently).
pub fn wire_type(input: &DataType, column: &TargetColumn) -> Result<DataType, String> {
    use DataType::*;
    let input = match input {
        Dictionary(_, v) => v.as_ref(),
        t => t,
    };
    let refuse = || {
        Err(format!(
            "the load's {} cannot be written into the table's {} column without changing values",
            crate::types::sql_name(input),
            column.sql_type
        ))
    };
    let integer = column.data_type.ends_with("int") || column.data_type == "integer";
    // Lists are JSON arrays, into any text column (MariaDB's `json` is a `longtext`).
    if let List(f) | LargeList(f) = input {
        if native(column) == Ok(Utf8) && scalar_member(f.data_type()) {
            return Ok(List(Arc::new(Field::new("item", sent_as(f.data_type()), true))));
        }
        return refuse();
    }
    // `boolean` is `tinyint(1)`: true and false are 1 and 0.
    if *input == Boolean && integer {
        return Ok(Boolean);
    }
    let target = native(column)?;
    let fits = match (&column.data_type[..], input) {
        // 24 bits: what 16 bits hold.
        ("mediumint", Int8 | Int16 | UInt8 | UInt16) => !column.unsigned || matches!(input, UInt8 | UInt16),
        ("mediumint", _) => false,
        // A zoned timestamp goes into a `datetime` as its UTC time (the sessions are in UTC).
        ("datetime", Timestamp(_, Some(_))) => true,
        _ => crate::types::widens(input, &target),
    };
    if !fits {
        return refuse();
    }
    Ok(match &target {
        // The column's own float type: a float's shortest text is that type's.
        Float32 | Float64 => target,
        _ => sent_as(input),
    })
}

/// The type a value of `t` is written from: its own, or the one with the same values that
/// [`Values`] reads.
fn sent_as(t: &DataType) -> DataType {
    use DataType::*;
    match t {
        Dictionary(_, v) => sent_as(v),
        Null => Utf8,
        LargeUtf8 | Utf8View => Utf8,
        Float16 => Float32,
        LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        Date64 => Date32,
        Time32(_) | Time64(_) => Time64(TimeUnit::Microsecond),
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.clone()),
        other => other.clone(),
    }
}

/// What stands between a load's columns (`input`) and the table (`None`: it does not exist
/// and will be created): one message per problem, empty when the load can write.
pub fn problems(
    input: &datafusion::arrow::datatypes::Schema,
    table: Option<&TargetTable>,
    add_columns: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = table {
        match &t.engine {
            None => out.push("it is a view: weir loads into tables".to_string()),
            Some(e) if !transactional(e) => out.push(format!(
                "its engine is {e}, which cannot roll a failed load back: weir loads into InnoDB tables (ALTER TABLE … ENGINE=InnoDB)"
            )),
            Some(_) => {}
        }
    }
    out.extend(super::super::database::target_problems(
        input,
        table.map(|t| &t.columns[..]),
        add_columns,
        |t| column_type(t, false),
        wire_type,
    ));
    out
}

/// How the rows are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `LOAD DATA … FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'`: a
    /// line per row, `\N` for NULL, bytes as hexadecimal (read through `UNHEX`).
    Infile,
    /// `INSERT … VALUES (…), (…)`: a parenthesized row of literals.
    Values,
}

/// One column's values (already of its wire type), ready to write as text.
enum Values<'a> {
    /// `1` and `0` (`true` and `false` in a JSON array).
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array, u32),
    Decimal256(&'a Decimal256Array, u32),
    Text(&'a StringArray),
    Bytes(&'a BinaryArray),
    Date(&'a Date32Array),
    /// Microseconds since 1970 (UTC), and the fractional digits the column keeps.
    Timestamp(&'a TimestampMicrosecondArray, u32),
    Time(&'a Time64MicrosecondArray, u32),
    /// A JSON array.
    List(&'a ListArray, Box<Values<'a>>),
}

impl<'a> Values<'a> {
    fn of(array: &'a ArrayRef, fraction: u32) -> Result<Values<'a>, String> {
        use DataType::*;
        Ok(match array.data_type() {
            Boolean => Values::Bool(array.as_boolean()),
            Int8 => Values::I8(array.as_primitive()),
            Int16 => Values::I16(array.as_primitive()),
            Int32 => Values::I32(array.as_primitive()),
            Int64 => Values::I64(array.as_primitive()),
            UInt8 => Values::U8(array.as_primitive()),
            UInt16 => Values::U16(array.as_primitive()),
            UInt32 => Values::U32(array.as_primitive()),
            UInt64 => Values::U64(array.as_primitive()),
            Float32 => Values::F32(array.as_primitive()),
            Float64 => Values::F64(array.as_primitive()),
            Decimal128(_, s) => Values::Decimal(array.as_primitive(), (*s).max(0) as u32),
            Decimal256(_, s) => Values::Decimal256(array.as_primitive(), (*s).max(0) as u32),
            Utf8 => Values::Text(array.as_string()),
            Binary => Values::Bytes(array.as_binary()),
            Date32 => Values::Date(array.as_primitive()),
            Timestamp(TimeUnit::Microsecond, _) => Values::Timestamp(array.as_primitive(), fraction),
            Time64(TimeUnit::Microsecond) => Values::Time(array.as_primitive(), fraction),
            List(_) => {
                let list = array.as_list::<i32>();
                let values: &'a ArrayRef = list.values();
                Values::List(list, Box::new(Values::of(values, 6)?))
            }
            other => return Err(format!("{other} values cannot be written as text")),
        })
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Values::Bool(a) => a.is_null(i),
            Values::I8(a) => a.is_null(i),
            Values::I16(a) => a.is_null(i),
            Values::I32(a) => a.is_null(i),
            Values::I64(a) => a.is_null(i),
            Values::U8(a) => a.is_null(i),
            Values::U16(a) => a.is_null(i),
            Values::U32(a) => a.is_null(i),
            Values::U64(a) => a.is_null(i),
            Values::F32(a) => a.is_null(i),
            Values::F64(a) => a.is_null(i),
            Values::Decimal(a, _) => a.is_null(i),
            Values::Decimal256(a, _) => a.is_null(i),
            Values::Text(a) => a.is_null(i),
            Values::Bytes(a) => a.is_null(i),
            Values::Date(a) => a.is_null(i),
            Values::Timestamp(a, _) => a.is_null(i),
            Values::Time(a, _) => a.is_null(i),
            Values::List(a, _) => a.is_null(i),
        }
    }

    /// Whether the value's text is a string (quoted in a list, escaped in a row).
    fn quoted(&self) -> bool {
        matches!(self, Values::Text(_) | Values::Date(_) | Values::Timestamp(..) | Values::Time(..) | Values::List(..))
    }

    /// The text of value `i` (not NULL), unescaped. Bytes: hexadecimal.
    fn text(&self, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
        let mut int = itoa::Buffer::new();
        let mut float = ryu::Buffer::new();
        match self {
            Values::Bool(a) => out.push(if a.value(i) { b'1' } else { b'0' }),
            Values::I8(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::I16(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::I32(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::I64(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::U8(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::U16(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::U32(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::U64(a) => out.extend_from_slice(int.format(a.value(i)).as_bytes()),
            Values::F32(a) => {
                let v = a.value(i);
                if !v.is_finite() {
                    return Err(format!("{v} cannot be stored: MySQL has no NaN or infinity"));
                }
                out.extend_from_slice(float.format_finite(v).as_bytes());
            }
            Values::F64(a) => {
                let v = a.value(i);
                if !v.is_finite() {
                    return Err(format!("{v} cannot be stored: MySQL has no NaN or infinity"));
                }
                out.extend_from_slice(float.format_finite(v).as_bytes());
            }
            Values::Decimal(a, s) => {
                let v = a.value(i);
                if v < 0 {
                    out.push(b'-');
                }
                point(int.format(v.unsigned_abs()).as_bytes(), *s, out);
            }
            Values::Decimal256(a, s) => {
                let text = a.value(i).to_string();
                let digits = match text.strip_prefix('-') {
                    Some(d) => {
                        out.push(b'-');
                        d
                    }
                    None => &text,
                };
                point(digits.as_bytes(), *s, out);
            }
            Values::Text(a) => out.extend_from_slice(a.value(i).as_bytes()),
            Values::Bytes(a) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                for b in a.value(i) {
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 15) as usize]);
                }
            }
            Values::Date(a) => {
                let d = a.value(i);
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(d.saturating_add(719_163))
                    .ok_or_else(|| format!("day {d} is not a date"))?;
                write_date(date, out)?;
            }
            Values::Timestamp(a, fraction) => {
                let us = a.value(i);
                let t = chrono::DateTime::from_timestamp_micros(us)
                    .ok_or_else(|| format!("{us} µs since 1970 is not a time"))?
                    .naive_utc();
                write_date(t.date(), out)?;
                out.push(b' ');
                write_time(us.rem_euclid(86_400_000_000), *fraction, out)?;
            }
            Values::Time(a, fraction) => write_time(a.value(i), *fraction, out)?,
            Values::List(a, member) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                out.push(b'[');
                let mut text = Vec::new();
                for k in start..end {
                    if k > start {
                        out.push(b',');
                    }
                    if member.is_null(k) {
                        out.extend_from_slice(b"null");
                        continue;
                    }
                    text.clear();
                    member.text(k, &mut text)?;
                    match **member {
                        Values::Bool(_) => out.extend_from_slice(if text == b"1" { b"true" } else { b"false" }),
                        ref m if m.quoted() => {
                            let s = std::str::from_utf8(&text).map_err(|e| e.to_string())?;
                            out.extend_from_slice(serde_json::to_string(s).map_err(|e| e.to_string())?.as_bytes());
                        }
                        _ => out.extend_from_slice(&text),
                    }
                }
                out.push(b']');
            }
        }
        Ok(())
    }
}

/// `digits` (an unsigned integer's) as a decimal with `scale` digits after the point.
fn point(digits: &[u8], scale: u32, out: &mut Vec<u8>) {
    let scale = scale as usize;
    if scale == 0 {
        out.extend_from_slice(digits);
        return;
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

fn write_date(d: chrono::NaiveDate, out: &mut Vec<u8>) -> Result<(), String> {
    use chrono::Datelike;
    use std::io::Write;
    if !(0..=9999).contains(&d.year()) {
        return Err(format!("{d} is outside the years MySQL keeps (0 to 9999)"));
    }
    write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day()).map_err(|e| e.to_string())
}

/// A time of day (`us`: microseconds since midnight) with six fractional digits, refused when
/// it has more than the `fraction` the column keeps (MySQL would round it).
fn write_time(us: i64, fraction: u32, out: &mut Vec<u8>) -> Result<(), String> {
    use std::io::Write;
    let (secs, micros) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let unit = 10i64.pow(6 - fraction.min(6));
    if micros % unit != 0 {
        return Err(format!(
            "a time with {micros:06} µs has more fractional digits of a second than the column keeps ({fraction}): MySQL would round it"
        ));
    }
    write!(out, "{:02}:{:02}:{:02}.{micros:06}", secs / 3600, secs / 60 % 60, secs % 60).map_err(|e| e.to_string())
}

/// The rows of a batch as text, in a framing: [`Row::write`] appends one.
pub struct Row<'a> {
    values: Vec<Values<'a>>,
    framing: Framing,
    text: Vec<u8>,
}

impl<'a> Row<'a> {
    /// `columns` (each already cast to its wire type; `fractions[k]`: the fractional digits of
    /// a second column `k` keeps).
    pub fn new(columns: &'a [ArrayRef], fractions: &[u32], framing: Framing) -> Result<Row<'a>, String> {
        let values = columns.iter().zip(fractions).map(|(a, f)| Values::of(a, *f)).collect::<Result<_, _>>()?;
        Ok(Row { values, framing, text: Vec::with_capacity(64) })
    }

    /// Append row `i`. `Err`: the column and why its value cannot be written.
    pub fn write(&mut self, i: usize, names: &[String], out: &mut Vec<u8>) -> Result<(), String> {
        if self.framing == Framing::Values {
            out.push(b'(');
        }
        for (k, v) in self.values.iter().enumerate() {
            if k > 0 {
                out.push(if self.framing == Framing::Infile { b'\t' } else { b',' });
            }
            if v.is_null(i) {
                out.extend_from_slice(if self.framing == Framing::Infile { b"\\N" } else { b"NULL" });
                continue;
            }
            self.text.clear();
            v.text(i, &mut self.text).map_err(|why| format!("column `{}`: {why}", names[k]))?;
            match (self.framing, v) {
                (Framing::Values, Values::Bytes(_)) => {
                    out.extend_from_slice(b"X'");
                    out.extend_from_slice(&self.text);
                    out.push(b'\'');
                }
                (Framing::Values, v) if v.quoted() => {
                    out.push(b'\'');
                    escape(&self.text, out);
                    out.push(b'\'');
                }
                (Framing::Values, _) | (Framing::Infile, Values::Bytes(_)) => out.extend_from_slice(&self.text),
                (Framing::Infile, _) => escape(&self.text, out),
            }
        }
        out.push(if self.framing == Framing::Infile { b'\n' } else { b')' });
        Ok(())
    }
}

/// `text` with the characters that end a field, a line or a string literal escaped (the same
/// escapes in `LOAD DATA … ESCAPED BY '\\'` and in a quoted literal without
/// `NO_BACKSLASH_ESCAPES`).
fn escape(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            0x1a => out.extend_from_slice(b"\\Z"),
            b'\'' => out.extend_from_slice(b"\\'"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ListBuilder, StringBuilder};

    fn column(data_type: &str, sql_type: &str) -> TargetColumn {
        let (precision, scale) = match sql_type.split_once('(') {
            Some((_, rest)) if data_type == "decimal" => {
                let (p, s) = rest.trim_end_matches(')').split_once(',').unwrap();
                (p.parse().unwrap(), s.parse().unwrap())
            }
            _ => (0, 0),
        };
        TargetColumn {
            name: "c".into(),
            data_type: data_type.into(),
            sql_type: sql_type.into(),
            unsigned: sql_type.contains("unsigned"),
            precision,
            scale,
            fraction: if sql_type.contains("(6)") { 6 } else { 0 },
        }
    }

    fn line(columns: Vec<ArrayRef>, fractions: &[u32], framing: Framing) -> Result<String, String> {
        let names: Vec<String> = (0..columns.len()).map(|k| format!("c{k}")).collect();
        let mut row = Row::new(&columns, fractions, framing)?;
        let mut out = Vec::new();
        for i in 0..columns[0].len() {
            row.write(i, &names, &mut out)?;
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn only_widening_writes_are_allowed() {
        use DataType::*;
        let ok = |t: DataType, c: TargetColumn| wire_type(&t, &c).is_ok();
        assert!(ok(Int32, column("bigint", "bigint")));
        assert!(!ok(Int64, column("int", "int")));
        assert!(ok(Int16, column("mediumint", "mediumint")));
        assert!(!ok(Int32, column("mediumint", "mediumint")));
        assert!(!ok(Int16, column("mediumint", "mediumint unsigned")));
        assert!(!ok(Int8, column("bigint", "bigint unsigned")));
        assert!(ok(UInt32, column("bigint", "bigint")));
        assert!(ok(Boolean, column("tinyint", "tinyint(1)")));
        assert!(ok(Decimal128(12, 2), column("decimal", "decimal(15,3)")));
        assert!(!ok(Decimal128(12, 2), column("decimal", "decimal(12,1)")));
        assert!(ok(Int64, column("decimal", "decimal(20,0)")));
        assert!(!ok(Float64, column("float", "float")));
        assert!(ok(Float32, column("double", "double")));
        assert!(ok(Utf8, column("varchar", "varchar(20)")));
        assert!(!ok(Utf8, column("int", "int")));
        assert!(ok(Timestamp(TimeUnit::Microsecond, Some("UTC".into())), column("datetime", "datetime(6)")));
        assert!(!ok(Timestamp(TimeUnit::Microsecond, None), column("timestamp", "timestamp(6)")));
        assert!(!ok(Utf8, column("geometry", "geometry")));
        // A float is sent as the column's float type: a float32 into a double as its double.
        assert_eq!(wire_type(&Float32, &column("double", "double")), Ok(Float64));
    }

    #[test]
    fn values_are_written_exactly_and_escaped() {
        let list = {
            let mut b = ListBuilder::new(StringBuilder::new());
            b.values().append_value("a\"b");
            b.values().append_null();
            b.append(true);
            b.append(false);
            Arc::new(b.finish()) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(-9_223_372_036_854_775_808), None])),
            Arc::new(Decimal128Array::from(vec![Some(-5), Some(123_456)]).with_precision_and_scale(10, 3).unwrap()),
            Arc::new(StringArray::from(vec![Some("tab\there\nnew 'q' \\ \0"), Some("")])),
            Arc::new(BinaryArray::from(vec![Some(&b"\xde\xad"[..]), Some(&b""[..])])),
            Arc::new(Float64Array::from(vec![Some(-2.5e-300), Some(0.1)])),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(-1), Some(253_402_300_799_999_999)])),
            list,
        ];
        let fractions = [0, 0, 0, 0, 0, 6, 0];
        assert_eq!(
            line(columns.clone(), &fractions, Framing::Infile).unwrap(),
            "-9223372036854775808\t-0.005\ttab\\there\\nnew \\'q\\' \\\\ \\0\tDEAD\t-2.5e-300\t1969-12-31 23:59:59.999999\t[\"a\\\\\"b\",null]\n\
             \\N\t123.456\t\t\t0.1\t9999-12-31 23:59:59.999999\t\\N\n"
        );
        assert_eq!(
            line(columns, &fractions, Framing::Values).unwrap(),
            "(-9223372036854775808,-0.005,'tab\\there\\nnew \\'q\\' \\\\ \\0',X'DEAD',-2.5e-300,'1969-12-31 23:59:59.999999','[\"a\\\\\"b\",null]')\
             (NULL,123.456,'',X'',0.1,'9999-12-31 23:59:59.999999',NULL)"
        );
    }

    #[test]
    fn what_mysql_would_change_is_refused() {
        let nan: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN]));
        assert!(line(vec![nan], &[0], Framing::Infile).unwrap_err().contains("no NaN"));
        // A datetime(0) column rounds fractions of a second: refused, whole seconds pass.
        let t: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_500_000]));
        assert!(line(vec![t], &[0], Framing::Infile).unwrap_err().contains("column `c0`"));
        let t: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![2_000_000]));
        assert_eq!(line(vec![t], &[0], Framing::Infile).unwrap(), "1970-01-01 00:00:02.000000\n");
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), Some(false), None]));
        assert_eq!(line(vec![b], &[0], Framing::Values).unwrap(), "(1)(0)(NULL)");
    }
}
