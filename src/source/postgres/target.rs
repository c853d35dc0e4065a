//! A PostgreSQL table as a load target (`sink::table` writes it; compile checks it): the
//! table's columns as the server describes them, the type a new column gets for an Arrow
//! type, the Arrow type a load's column is cast to before it is sent in the column's binary
//! form, and that binary form ([`encode`]: the mirror of [`super::decode`]).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, ListArray, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use tokio_postgres::types::{Kind, Type};

use super::{PG_EPOCH_DAYS, PG_EPOCH_MICROS, PgError, arrow_type, numeric_typmod};

/// A column of an existing table.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    pub name: String,
    pub pg: Type,
    pub typmod: i32,
    /// The type as PostgreSQL writes it (`numeric(12,2)`, `character varying(20)`).
    pub sql_type: String,
}

/// The columns of `table` (written as SQL: quoted parts), in order; `None` when there is no
/// such table.
pub async fn describe_table(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Option<Vec<TargetColumn>>, PgError> {
    let exists = client.query_one("SELECT to_regclass($1)::oid", &[&table]).await?;
    let Some(oid) = exists.get::<_, Option<u32>>(0) else { return Ok(None) };
    let rows = client
        .query(
            "SELECT attname::text, atttypid, atttypmod, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let oid: u32 = r.get(1);
        // A type of an extension (citext, …) has no fixed OID: its columns are refused below.
        let pg = Type::from_oid(oid).unwrap_or(Type::UNKNOWN);
        out.push(TargetColumn { name: r.get(0), pg, typmod: r.get(2), sql_type: r.get(3) });
    }
    Ok(Some(out))
}

/// The PostgreSQL type a new column of Arrow type `t` gets, or why there is none.
pub fn column_type(t: &DataType) -> Result<String, String> {
    Ok(match t {
        // A column of NULLs only (a CSV column that is always empty): text.
        DataType::Null => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *s >= 0 && *p <= 38 => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "bytea".into()
        }
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Dictionary(_, v) => return column_type(v),
        DataType::List(f) | DataType::LargeList(f)
            if !matches!(f.data_type(), DataType::List(_) | DataType::LargeList(_)) =>
        {
            format!("{}[]", column_type(f.data_type())?)
        }
        other => {
            return Err(format!("{} has no PostgreSQL column type weir writes", crate::types::sql_name(other)));
        }
    })
}

/// The Arrow type whose binary form is `column`'s: what a load's column of type `input` is
/// cast to before it is sent. `Err` says why `input` cannot be written into `column` as it is
/// (a narrowing or a change of meaning: weir never writes a value the column would hold
/// differently).
pub fn wire_type(input: &DataType, column: &TargetColumn) -> Result<DataType, String> {
    let input = match input {
        DataType::Dictionary(_, v) => v.as_ref(),
        t => t,
    };
    // An unconstrained numeric holds any decimal: the load's scale is kept.
    let wire = if column.pg == Type::NUMERIC && numeric_typmod(column.typmod).is_none() {
        match input {
            DataType::Decimal128(_, s) | DataType::Decimal256(_, s) if *s >= 0 => DataType::Decimal128(38, *s),
            t if t.is_integer() => DataType::Decimal128(38, 0),
            _ => return Err(format!("{} cannot be written into a numeric column", crate::types::sql_name(input))),
        }
    } else if matches!(column.pg.kind(), Kind::Array(m) if *m == Type::NUMERIC && numeric_typmod(column.typmod).is_none())
    {
        match input {
            DataType::List(f) | DataType::LargeList(f) => match f.data_type() {
                DataType::Decimal128(_, s) if *s >= 0 => {
                    DataType::List(Arc::new(Field::new("item", DataType::Decimal128(38, *s), true)))
                }
                _ => return Err("only a list of decimals can be written into a numeric[] column".into()),
            },
            _ => return Err("only a list can be written into an array column".into()),
        }
    } else {
        arrow_type(&column.name, &column.pg, column.typmod)
            .map_err(|_| format!("weir does not write into {} columns", column.sql_type))?
    };
    if crate::types::widens(input, &wire) {
        Ok(wire)
    } else {
        Err(format!(
            "the load's {} cannot be written into the table's {} column without changing values",
            crate::types::sql_name(input),
            column.sql_type
        ))
    }
}

/// The start of a binary `COPY`: signature, flags, header extension length.
pub fn copy_header(out: &mut BytesMut) {
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
}

/// The end of a binary `COPY`.
pub fn copy_trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// One column's values, ready to write in `pg`'s binary form.
enum Values<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Numeric(&'a Decimal128Array, i8),
    Text(&'a StringArray),
    Jsonb(&'a StringArray),
    Uuid(&'a StringArray),
    Bytes(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
    Time(&'a Time64MicrosecondArray),
    List(&'a ListArray, Box<Values<'a>>, u32),
}

impl<'a> Values<'a> {
    /// `array` (already of its wire type) as values of `pg`.
    fn of(array: &'a ArrayRef, pg: &Type) -> Result<Values<'a>, String> {
        let wrong = || format!("{} values cannot be sent as {pg}", array.data_type());
        Ok(match array.data_type() {
            DataType::Boolean => Values::Bool(array.as_boolean()),
            DataType::Int16 => Values::I16(array.as_primitive()),
            DataType::Int32 => Values::I32(array.as_primitive()),
            DataType::Int64 => Values::I64(array.as_primitive()),
            DataType::Float32 => Values::F32(array.as_primitive()),
            DataType::Float64 => Values::F64(array.as_primitive()),
            DataType::Decimal128(_, s) => Values::Numeric(array.as_primitive(), *s),
            DataType::Utf8 if *pg == Type::JSONB => Values::Jsonb(array.as_string()),
            DataType::Utf8 if *pg == Type::UUID => Values::Uuid(array.as_string()),
            DataType::Utf8 => Values::Text(array.as_string()),
            DataType::Binary => Values::Bytes(array.as_binary()),
            DataType::Date32 => Values::Date(array.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Values::Timestamp(array.as_primitive()),
            DataType::Time64(TimeUnit::Microsecond) => Values::Time(array.as_primitive()),
            DataType::List(_) => {
                let Kind::Array(member) = pg.kind() else { return Err(wrong()) };
                let list = array.as_list::<i32>();
                // The values array lives as long as `array`.
                let values: &'a ArrayRef = list.values();
                Values::List(list, Box::new(Values::of(values, member)?), member.oid())
            }
            _ => return Err(wrong()),
        })
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Values::Bool(a) => a.is_null(i),
            Values::I16(a) => a.is_null(i),
            Values::I32(a) => a.is_null(i),
            Values::I64(a) => a.is_null(i),
            Values::F32(a) => a.is_null(i),
            Values::F64(a) => a.is_null(i),
            Values::Numeric(a, _) => a.is_null(i),
            Values::Text(a) | Values::Jsonb(a) | Values::Uuid(a) => a.is_null(i),
            Values::Bytes(a) => a.is_null(i),
            Values::Date(a) => a.is_null(i),
            Values::Timestamp(a) => a.is_null(i),
            Values::Time(a) => a.is_null(i),
            Values::List(a, _, _) => a.is_null(i),
        }
    }

    /// Value `i` as a field: its length (-1: NULL), then its bytes.
    fn write(&self, i: usize, out: &mut BytesMut) -> Result<(), String> {
        if self.is_null(i) {
            out.put_i32(-1);
            return Ok(());
        }
        match self {
            Values::Bool(a) => {
                out.put_i32(1);
                out.put_u8(a.value(i) as u8);
            }
            Values::I16(a) => {
                out.put_i32(2);
                out.put_i16(a.value(i));
            }
            Values::I32(a) => {
                out.put_i32(4);
                out.put_i32(a.value(i));
            }
            Values::I64(a) => {
                out.put_i32(8);
                out.put_i64(a.value(i));
            }
            Values::F32(a) => {
                out.put_i32(4);
                out.put_f32(a.value(i));
            }
            Values::F64(a) => {
                out.put_i32(8);
                out.put_f64(a.value(i));
            }
            Values::Numeric(a, s) => write_numeric(a.value(i), *s, out),
            Values::Text(a) => {
                let v = a.value(i).as_bytes();
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            Values::Jsonb(a) => {
                let v = a.value(i).as_bytes();
                out.put_i32(v.len() as i32 + 1);
                out.put_u8(1);
                out.put_slice(v);
            }
            Values::Uuid(a) => {
                let u =
                    uuid::Uuid::parse_str(a.value(i)).map_err(|e| format!("`{}` is not a uuid: {e}", a.value(i)))?;
                out.put_i32(16);
                out.put_slice(u.as_bytes());
            }
            Values::Bytes(a) => {
                let v = a.value(i);
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            Values::Date(a) => {
                out.put_i32(4);
                out.put_i32(a.value(i).checked_sub(PG_EPOCH_DAYS).ok_or("date out of range")?);
            }
            Values::Timestamp(a) => {
                out.put_i32(8);
                out.put_i64(a.value(i).checked_sub(PG_EPOCH_MICROS).ok_or("timestamp out of range")?);
            }
            Values::Time(a) => {
                out.put_i32(8);
                out.put_i64(a.value(i));
            }
            Values::List(a, members, oid) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                let len_at = out.len();
                out.put_i32(0); // the field's length, set below
                if start == end {
                    // An empty array has no dimensions.
                    out.put_i32(0);
                    out.put_i32(0);
                    out.put_u32(*oid);
                } else {
                    let has_null = (start..end).any(|k| members.is_null(k));
                    out.put_i32(1);
                    out.put_i32(has_null as i32);
                    out.put_u32(*oid);
                    out.put_i32((end - start) as i32);
                    out.put_i32(1);
                    for k in start..end {
                        members.write(k, out)?;
                    }
                }
                let len = (out.len() - len_at - 4) as i32;
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// A decimal (`v` at scale `s`) in PostgreSQL's binary `numeric` form: base-10000 digits
/// around the decimal point, the weight of the first, the sign and the display scale.
fn write_numeric(v: i128, scale: i8, out: &mut BytesMut) {
    // The decimal digits of |v|, most significant first.
    let mut abs = v.unsigned_abs();
    let mut digits = [0u8; 40];
    let mut n = 0;
    while abs > 0 {
        digits[n] = (abs % 10) as u8;
        abs /= 10;
        n += 1;
    }
    digits[..n].reverse();
    let scale = scale.max(0) as isize;
    let n = n as isize;
    // Digits padded to whole groups on both sides of the decimal point: `ip` integer digits,
    // `fp` fraction digits. The digit `d` places after the point (before it: negative) is
    // `digits[n - scale + d]`, zero outside.
    let int_len = (n - scale).max(0);
    let (ip, fp) = ((int_len + 3) / 4 * 4, (scale + 3) / 4 * 4);
    let digit = |x: isize| if (0..n).contains(&x) { digits[x as usize] as i16 } else { 0 };
    let mut groups = [0i16; 24];
    let count = ((ip + fp) / 4) as usize;
    for (g, slot) in groups.iter_mut().enumerate().take(count) {
        let at = n - scale - ip + 4 * g as isize;
        *slot = (0..4).fold(0, |a, t| a * 10 + digit(at + t));
    }
    let groups = &groups[..count];
    let first = groups.iter().position(|g| *g != 0).unwrap_or(count);
    let last = groups.iter().rposition(|g| *g != 0).map_or(first, |p| p + 1);
    let kept = &groups[first..last];
    let weight = if kept.is_empty() { 0 } else { (ip / 4 - 1 - first as isize) as i16 };
    out.put_i32(8 + 2 * kept.len() as i32);
    out.put_i16(kept.len() as i16);
    out.put_i16(weight);
    out.put_u16(if v < 0 && !kept.is_empty() { 0x4000 } else { 0 });
    out.put_u16(scale as u16);
    for g in kept {
        out.put_i16(*g);
    }
}

/// Append `columns` (each already cast to its wire type; `types[k]` is column `k`'s server
/// type) as rows of a binary `COPY`.
pub fn encode(columns: &[ArrayRef], types: &[Type], out: &mut BytesMut) -> Result<(), String> {
    let values: Vec<Values> = columns.iter().zip(types).map(|(a, t)| Values::of(a, t)).collect::<Result<_, _>>()?;
    let rows = columns.first().map_or(0, |c| c.len());
    for i in 0..rows {
        out.put_i16(values.len() as i16);
        for v in &values {
            v.write(i, out)?;
        }
    }
    Ok(())
}

/// What stands between a load's columns (`input`) and the table (`columns`; `None`: it does
/// not exist and will be created): one message per problem, empty when the load can write.
pub fn problems(
    input: &datafusion::arrow::datatypes::Schema,
    columns: Option<&[TargetColumn]>,
    add_columns: bool,
) -> Vec<String> {
    super::super::database::target_problems(input, columns, add_columns, column_type, wire_type)
}

impl super::super::database::TargetColumn for TargetColumn {
    fn name(&self) -> &str {
        &self.name
    }
    fn sql_type(&self) -> &str {
        &self.sql_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: i128, s: i8) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_numeric(v, s, &mut b);
        b[4..].to_vec()
    }

    #[test]
    fn numerics_encode_as_the_decoder_reads_them() {
        for (v, s) in [
            (1_234_567i128, 2i8),
            (-1, 12),
            (0, 2),
            (10_000, 0),
            (5, 0),
            (-123_456_789_012_345_678_901_234_567_890_123i128, 10),
            (99_999_999, 4),
            (100_000_000, 4),
            (1, 38),
            (i128::MAX / 1000, 3),
        ] {
            assert_eq!(super::super::numeric_to_i128(&numeric(v, s), s), Ok(v), "{v} at scale {s}");
        }
        // 12345.67: digits 1 2345 6700, weight 1, scale 2.
        assert_eq!(numeric(1_234_567, 2), [0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 9, 41, 26, 44]);
    }

    #[test]
    fn only_widening_writes_are_allowed() {
        let col = |pg: Type, typmod: i32| TargetColumn { name: "c".into(), sql_type: pg.name().into(), pg, typmod };
        assert_eq!(wire_type(&DataType::Int32, &col(Type::INT8, -1)), Ok(DataType::Int64));
        assert!(wire_type(&DataType::Int64, &col(Type::INT4, -1)).is_err());
        assert!(wire_type(&DataType::UInt32, &col(Type::INT4, -1)).is_err());
        assert_eq!(wire_type(&DataType::Int32, &col(Type::NUMERIC, -1)), Ok(DataType::Decimal128(38, 0)));
        let numeric_12_2 = ((12 << 16) | 2) + 4;
        assert_eq!(
            wire_type(&DataType::Decimal128(10, 2), &col(Type::NUMERIC, numeric_12_2)),
            Ok(DataType::Decimal128(12, 2))
        );
        assert!(wire_type(&DataType::Decimal128(10, 3), &col(Type::NUMERIC, numeric_12_2)).is_err());
        assert!(wire_type(&DataType::Float64, &col(Type::NUMERIC, numeric_12_2)).is_err());
        let naive = DataType::Timestamp(TimeUnit::Nanosecond, None);
        assert!(wire_type(&naive, &col(Type::TIMESTAMPTZ, -1)).is_err());
        assert!(wire_type(&naive, &col(Type::TIMESTAMP, -1)).is_ok());
        assert_eq!(wire_type(&DataType::Utf8View, &col(Type::JSONB, -1)), Ok(DataType::Utf8));
        assert!(wire_type(&DataType::Utf8, &col(Type::INT4, -1)).is_err());
    }
}
