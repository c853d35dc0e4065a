//! SQL type names in `extract.schema` → Arrow types.

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
    "timestamp with time zone",
    "binary",
];

/// Parse a SQL type name (case-insensitive, extra spaces allowed).
pub fn parse_sql_type(s: &str) -> Result<DataType, String> {
    let norm = s.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
    let (base, args) = match norm.find('(') {
        Some(i) => {
            let close = norm.rfind(')').filter(|c| *c > i).ok_or_else(|| format!("missing `)` in `{s}`"))?;
            if !norm[close + 1..].trim().is_empty() {
                return Err(format!("unexpected text after `)` in `{s}`"));
            }
            let args: Vec<&str> = norm[i + 1..close].split(',').map(str::trim).collect();
            (norm[..i].trim().to_string(), Some(args))
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
        "double" | "double precision" | "float8" | "float" => no_args(DataType::Float64),
        "real" | "float4" => no_args(DataType::Float32),
        "varchar" | "text" | "string" | "char" | "character varying" | "character" => Ok(DataType::Utf8),
        "boolean" | "bool" => no_args(DataType::Boolean),
        "date" => no_args(DataType::Date32),
        "timestamp" | "timestamp without time zone" | "datetime" => {
            no_args(DataType::Timestamp(TimeUnit::Nanosecond, None))
        }
        "timestamp with time zone" | "timestamptz" => {
            no_args(DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))
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

/// A SQL-ish name for an Arrow type, for `weir plan`.
pub fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float64 => "double".into(),
        DataType::Float32 => "real".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Null => "null".into(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_names() {
        assert_eq!(parse_sql_type("BIGINT"), Ok(DataType::Int64));
        assert_eq!(parse_sql_type("decimal(12, 2)"), Ok(DataType::Decimal128(12, 2)));
        assert_eq!(
            parse_sql_type("Timestamp  With Time Zone"),
            Ok(DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))
        );
        assert_eq!(parse_sql_type("varchar(20)"), Ok(DataType::Utf8));
        assert!(parse_sql_type("decimal(2,5)").is_err());
        assert!(parse_sql_type("int(3)").is_err());
        assert!(parse_sql_type("bigin").is_err());
        for t in TYPE_NAMES {
            let t = t.replace("(p,s)", "(10,2)");
            assert!(parse_sql_type(&t).is_ok(), "{t}");
        }
    }
}
