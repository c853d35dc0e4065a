//! Types: SQL type names (`schema:`, SQL) ↔ Arrow types, the type that holds two others, and
//! what an output format can store. Shared by sources, compile and sinks.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// The type names accepted, for messages.
pub const TYPE_NAMES: &[&str] = &[
    "bigint",
    "integer",
    "int",
    "smallint",
    "tinyint",
    "double",
    "float",
    "real",
    "decimal(p,s)",
    "numeric(p,s)",
    "varchar",
    "text",
    "string",
    "boolean",
    "date",
    "timestamp",
    "timestamp(p)",
    "timestamp with time zone",
    "binary",
];

/// Parse a SQL type name (case-insensitive, extra spaces allowed).
pub fn parse_sql_type(s: &str) -> Result<DataType, String> {
    let norm = s.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
    let (base, args) = match norm.find('(') {
        Some(i) => {
            let close = norm.rfind(')').filter(|c| *c > i).ok_or_else(|| format!("missing `)` in `{s}`"))?;
            let after = norm[close + 1..].trim();
            let base = norm[..i].trim();
            let args: Vec<&str> = norm[i + 1..close].split(',').map(str::trim).collect();
            // `timestamp(9) with time zone`
            if base == "timestamp" && matches!(after, "with time zone" | "without time zone") {
                (format!("timestamp {after}"), Some(args))
            } else if !after.is_empty() {
                return Err(format!("unexpected text after `)` in `{s}`"));
            } else {
                (base.to_string(), Some(args))
            }
        }
        None => (norm.clone(), None),
    };
    let no_args = |t: DataType| -> Result<DataType, String> {
        match &args {
            None => Ok(t),
            Some(_) => Err(format!("`{base}` takes no arguments")),
        }
    };
    match base.as_str() {
        "bigint" | "int8" | "long" => no_args(DataType::Int64),
        "integer" | "int" | "int4" => no_args(DataType::Int32),
        "smallint" | "int2" => no_args(DataType::Int16),
        "tinyint" => no_args(DataType::Int8),
        "bigint unsigned" | "ubigint" => no_args(DataType::UInt64),
        "integer unsigned" | "int unsigned" | "uinteger" => no_args(DataType::UInt32),
        "smallint unsigned" | "usmallint" => no_args(DataType::UInt16),
        "tinyint unsigned" | "utinyint" => no_args(DataType::UInt8),
        "time" => no_args(DataType::Time64(TimeUnit::Microsecond)),
        "double" | "double precision" | "float8" | "float" => no_args(DataType::Float64),
        "real" | "float4" => no_args(DataType::Float32),
        "varchar" | "text" | "string" | "char" | "character varying" | "character" => Ok(DataType::Utf8),
        "boolean" | "bool" => no_args(DataType::Boolean),
        "date" => no_args(DataType::Date32),
        "timestamp" | "timestamp without time zone" | "datetime" => {
            Ok(DataType::Timestamp(timestamp_unit(args.as_deref())?, None))
        }
        "timestamp with time zone" | "timestamptz" => {
            Ok(DataType::Timestamp(timestamp_unit(args.as_deref())?, Some("UTC".into())))
        }
        "binary" | "varbinary" | "bytea" | "blob" => no_args(DataType::Binary),
        "decimal" | "numeric" => {
            let (p, sc) = match args.as_deref() {
                None => (38u8, 10i8),
                Some([p]) => (p.parse().map_err(|_| format!("invalid precision `{p}`"))?, 0),
                Some([p, sc]) => (
                    p.parse().map_err(|_| format!("invalid precision `{p}`"))?,
                    sc.parse().map_err(|_| format!("invalid scale `{sc}`"))?,
                ),
                Some(_) => return Err("decimal takes (precision, scale)".into()),
            };
            if p == 0 || p > 76 {
                return Err(format!("decimal precision must be 1 to 76, got {p}"));
            }
            if sc < 0 || sc as u8 > p {
                return Err(format!("decimal scale must be 0 to the precision ({p}), got {sc}"));
            }
            Ok(if p <= 38 { DataType::Decimal128(p, sc) } else { DataType::Decimal256(p, sc) })
        }
        _ => Err(format!("unknown type `{s}`")),
    }
}

/// `timestamp` is microseconds (as in DuckDB, Spark and PostgreSQL); `timestamp(p)` gives
/// the fractional digits: 0 (seconds), 3, 6 or 9 (nanoseconds).
fn timestamp_unit(args: Option<&[&str]>) -> Result<TimeUnit, String> {
    match args {
        None => Ok(TimeUnit::Microsecond),
        Some(["0"]) => Ok(TimeUnit::Second),
        Some(["3"]) => Ok(TimeUnit::Millisecond),
        Some(["6"]) => Ok(TimeUnit::Microsecond),
        Some(["9"]) => Ok(TimeUnit::Nanosecond),
        Some(a) => Err(format!("timestamp precision must be 0, 3, 6 or 9 fractional digits, got `{}`", a.join(","))),
    }
}

/// The type a column of type `dt` is stored with in `format`, when the format cannot store
/// `dt` itself (`Ok(None)`: as it is), or why it cannot be stored at all:
/// - Parquet: timestamps in seconds have no Parquet logical type (they would be written as
///   plain integers, which DuckDB and Spark read as numbers): microseconds, exactly.
/// - Delta: timestamps are microseconds by the Delta protocol: seconds and milliseconds exactly,
///   nanoseconds floored to the microsecond (as Spark); a time zone other than UTC becomes UTC
///   (the same instants: Delta's `timestamp` is UTC). Delta has no unsigned integers: each is
///   stored in the next signed type that holds all its values (`uint64`: `decimal(20,0)`).
///   Decimals of more than 38 digits, times of day, durations and intervals have no Delta
///   type.
pub fn stored_type(dt: &DataType, format: crate::spec::OutputFormat) -> Result<Option<DataType>, String> {
    use crate::spec::OutputFormat;
    Ok(match (dt, format) {
        (DataType::Timestamp(TimeUnit::Second, tz), OutputFormat::Parquet) => {
            Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))
        }
        (DataType::Timestamp(unit, tz), OutputFormat::Delta) => {
            let utc = tz.as_ref().map(|_| "UTC".into());
            let stored = DataType::Timestamp(TimeUnit::Microsecond, utc.clone());
            (*unit != TimeUnit::Microsecond || tz.as_deref().is_some_and(|z| !z.eq_ignore_ascii_case("utc")))
                .then_some(stored)
        }
        (DataType::UInt8, OutputFormat::Delta) => Some(DataType::Int16),
        (DataType::UInt16, OutputFormat::Delta) => Some(DataType::Int32),
        (DataType::UInt32, OutputFormat::Delta) => Some(DataType::Int64),
        (DataType::UInt64, OutputFormat::Delta) => Some(DataType::Decimal128(20, 0)),
        (DataType::Float16, OutputFormat::Delta) => Some(DataType::Float32),
        (DataType::Decimal256(p, _), OutputFormat::Delta) => {
            return Err(format!("it is decimal({p},…): Delta tables hold decimals of up to 38 digits"));
        }
        (DataType::Time32(_) | DataType::Time64(_), OutputFormat::Delta) => {
            return Err(
                "it is a time of day: Delta tables have no such type (store it as text, or as a timestamp)".into()
            );
        }
        (DataType::Duration(_) | DataType::Interval(_), OutputFormat::Delta) => {
            return Err(
                "it is a duration: Delta tables have no such type (store it as a number of seconds, say)".into()
            );
        }
        _ => None,
    })
}

/// Whether a column of this type can be a Parquet output's partition column: a scalar with a
/// text form for its directory name (see `sink::hive`).
pub fn partitionable(dt: &DataType) -> bool {
    use DataType::*;
    match dt {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32 | Float64 => true,
        Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => true,
        Utf8 | LargeUtf8 | Utf8View | Date32 | Date64 | Timestamp(..) | Time32(_) | Time64(_) => true,
        Dictionary(_, v) => partitionable(v),
        _ => false,
    }
}

/// A SQL-ish name for an Arrow type, for `weir plan`.
pub fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::UInt32 => "integer unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::Time64(TimeUnit::Microsecond) => "time".into(),
        DataType::Float64 => "double".into(),
        DataType::Float32 => "real".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(unit, tz) => {
            let p = match unit {
                TimeUnit::Second => "(0)",
                TimeUnit::Millisecond => "(3)",
                TimeUnit::Microsecond => "",
                TimeUnit::Nanosecond => "(9)",
            };
            if tz.is_some() { format!("timestamp{p} with time zone") } else { format!("timestamp{p}") }
        }
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Null => "null".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => format!("{}[]", sql_name(f.data_type())),
        other => other.to_string().to_lowercase(),
    }
}

/// The type a text value (a CSV field) reads as, as inference would type it alone.
pub fn text_value_type(v: &str) -> DataType {
    let v = v.trim();
    if v.parse::<i64>().is_ok() {
        DataType::Int64
    } else if v.parse::<f64>().is_ok() {
        DataType::Float64
    } else if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
        DataType::Boolean
    } else if chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() {
        DataType::Date32
    } else if v.parse::<chrono::NaiveDateTime>().is_ok() || v.parse::<chrono::DateTime<chrono::FixedOffset>>().is_ok() {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    } else {
        DataType::Utf8
    }
}

/// The type holding values of both `a` and `b`, for text files whose columns were inferred
/// differently: integers and floats → `Float64` (`Int64` for two integer types), timestamps →
/// the finer unit, a date and a timestamp → the timestamp; otherwise text.
pub fn widen(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    let int = |t: &DataType| matches!(t, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32);
    let float = |t: &DataType| matches!(t, Float16 | Float32 | Float64);
    let rank = |u: &TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    match (a, b) {
        _ if a == b => a.clone(),
        (Null, t) | (t, Null) => t.clone(),
        (x, y) if int(x) && int(y) => Int64,
        (x, y) if (int(x) || float(x)) && (int(y) || float(y)) => Float64,
        (Timestamp(u1, z1), Timestamp(u2, z2)) if z1 == z2 => {
            Timestamp(if rank(u1) >= rank(u2) { *u1 } else { *u2 }, z1.clone())
        }
        (Date32 | Date64, Timestamp(u, z)) | (Timestamp(u, z), Date32 | Date64) => Timestamp(*u, z.clone()),
        _ => Utf8,
    }
}

/// `a` and `b` merged: the columns of `a`, then those only in `b`, each with [`widen`]ed type.
pub fn widen_schemas(
    a: &datafusion::arrow::datatypes::Schema,
    b: &datafusion::arrow::datatypes::Schema,
) -> datafusion::arrow::datatypes::Schema {
    use datafusion::arrow::datatypes::Field;
    let mut fields: Vec<Field> = a
        .fields()
        .iter()
        .map(|f| match b.field_with_name(f.name()) {
            Ok(g) => Field::new(f.name(), widen(f.data_type(), g.data_type()), true),
            Err(_) => Field::new(f.name(), f.data_type().clone(), true),
        })
        .collect();
    for g in b.fields() {
        if a.field_with_name(g.name()).is_err() {
            fields.push(Field::new(g.name(), g.data_type().clone(), true));
        }
    }
    datafusion::arrow::datatypes::Schema::new(fields)
}

/// Whether every value of type `from` is a value of type `to` (timestamps: to the
/// microsecond databases keep, in the same sense of time zone): what a load may write into
/// a column of type `to` without changing a value.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let int_bits = |t: &DataType| match t {
        Int8 => Some((8, true)),
        Int16 => Some((16, true)),
        Int32 => Some((32, true)),
        Int64 => Some((64, true)),
        UInt8 => Some((8, false)),
        UInt16 => Some((16, false)),
        UInt32 => Some((32, false)),
        UInt64 => Some((64, false)),
        _ => None,
    };
    // Decimal digits an integer type needs.
    let int_digits = |bits: u32| match bits {
        8 => 3,
        16 => 5,
        32 => 10,
        _ => 20,
    };
    match (from, to) {
        _ if from == to => true,
        (Null, _) => true,
        (f, t) if int_bits(f).is_some() && int_bits(t).is_some() => {
            let ((fb, fs), (tb, ts)) = (int_bits(f).unwrap_or_default(), int_bits(t).unwrap_or_default());
            ts && (if fs { fb <= tb } else { fb < tb })
        }
        (f, Decimal128(p, s)) if let Some((b, _)) = int_bits(f) => (*p as i32 - *s as i32) >= int_digits(b),
        (f, Decimal256(p, s)) if let Some((b, _)) = int_bits(f) => (*p as i32 - *s as i32) >= int_digits(b),
        (Decimal128(p1, s1) | Decimal256(p1, s1), Decimal128(p2, s2) | Decimal256(p2, s2)) => {
            s2 >= s1 && (*p2 as i32 - *s2 as i32) >= (*p1 as i32 - *s1 as i32)
        }
        (Float16 | Float32, Float32 | Float64) | (Float64, Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8) => true,
        (Binary | LargeBinary | BinaryView | FixedSizeBinary(_), Binary) => true,
        (Date32 | Date64, Date32) => true,
        (Timestamp(_, a), Timestamp(TimeUnit::Microsecond, b)) => a.is_some() == b.is_some(),
        (Time32(_) | Time64(_), Time64(TimeUnit::Microsecond)) => true,
        (List(a) | LargeList(a), List(b)) => widens(a.data_type(), b.data_type()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn widening_holds_both_types() {
        use super::widen;
        use datafusion::arrow::datatypes::{DataType::*, TimeUnit};
        assert_eq!(widen(&Int64, &Float64), Float64);
        assert_eq!(widen(&Int32, &Int64), Int64);
        assert_eq!(widen(&Null, &Utf8), Utf8);
        assert_eq!(
            widen(&Timestamp(TimeUnit::Second, None), &Timestamp(TimeUnit::Microsecond, None)),
            Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(widen(&Date32, &Timestamp(TimeUnit::Second, None)), Timestamp(TimeUnit::Second, None));
        assert_eq!(widen(&Int64, &Utf8), Utf8);
        assert_eq!(widen(&Boolean, &Int64), Utf8);
    }

    use super::*;

    #[test]
    fn parses_documented_names() {
        assert_eq!(parse_sql_type("BIGINT"), Ok(DataType::Int64));
        assert_eq!(parse_sql_type("decimal(12, 2)"), Ok(DataType::Decimal128(12, 2)));
        assert_eq!(
            parse_sql_type("Timestamp  With Time Zone"),
            Ok(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
        );
        assert_eq!(parse_sql_type("timestamp"), Ok(DataType::Timestamp(TimeUnit::Microsecond, None)));
        assert_eq!(parse_sql_type("timestamp(9)"), Ok(DataType::Timestamp(TimeUnit::Nanosecond, None)));
        assert_eq!(
            parse_sql_type("timestamp(3) with time zone"),
            Ok(DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))
        );
        assert!(parse_sql_type("timestamp(5)").is_err());
        for t in ["timestamp", "timestamp(9)", "timestamp(3) with time zone", "timestamp(0)"] {
            assert_eq!(sql_name(&parse_sql_type(t).unwrap()), t);
        }
        assert_eq!(parse_sql_type("varchar(20)"), Ok(DataType::Utf8));
        assert!(parse_sql_type("decimal(2,5)").is_err());
        assert!(parse_sql_type("int(3)").is_err());
        assert!(parse_sql_type("bigin").is_err());
        for t in TYPE_NAMES {
            let t = t.replace("(p,s)", "(10,2)").replace("(p)", "(9)");
            assert!(parse_sql_type(&t).is_ok(), "{t}");
        }
    }
}
