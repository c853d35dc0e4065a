//! The keys of a merge's run as a hash set of integers, for a merge keyed by one integer
//! column: a current row is kept when its key is not in the set. DataFusion's anti-join holds
//! the collected key batches and a join hash map over them (about 34 bytes per key); the set
//! holds 9 bytes per slot. On the layouts benchmark's unsorted layouts, where one run takes
//! all 18,000,000 update keys, that is the merge's peak memory.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// Whether keys of type `t` fit the set (every value is an `i64`, and equal as an `i64` only
/// when equal).
pub(super) fn fits(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// A hasher for `i64` keys: one multiplication (Fibonacci hashing), whose high bits — the
/// ones the table's control bytes use — depend on every bit of the key.
#[derive(Default, Clone, Copy)]
pub(super) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default, Clone, Copy)]
pub(super) struct BuildIntHasher;

impl BuildHasher for BuildIntHasher {
    type Hasher = IntHasher;
    fn build_hasher(&self) -> IntHasher {
        IntHasher::default()
    }
}

pub(super) type Keys = HashSet<i64, BuildIntHasher>;

/// The bytes `keys` holds: a slot and a control byte per bucket (at most 7 in 8 are used).
pub(super) fn bytes(keys: &Keys) -> usize {
    keys.capacity() / 7 * 8 * (std::mem::size_of::<i64>() + 1)
}

/// Add the non-null values of `array` (of a type that [`fits`]) to `keys`.
pub(super) fn add(keys: &mut Keys, array: &dyn Array) -> Result<()> {
    let values = cast(array, &DataType::Int64)?;
    let values = values.as_primitive::<Int64Type>();
    keys.reserve(values.len() - values.null_count());
    if values.null_count() == 0 {
        keys.extend(values.values().iter().copied());
    } else {
        keys.extend(values.iter().flatten());
    }
    Ok(())
}

/// `weir_key_not_in_run(key)`: true when `key` is NULL or not in the set (never NULL, so that
/// a filter on it keeps the rows it should).
struct NotIn {
    keys: Arc<Keys>,
    signature: Signature,
}

impl std::fmt::Debug for NotIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "weir_key_not_in_run({} keys)", self.keys.len())
    }
}

impl PartialEq for NotIn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys)
    }
}
impl Eq for NotIn {}
impl std::hash::Hash for NotIn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.keys) as usize).hash(state)
    }
}

impl ScalarUDFImpl for NotIn {
    fn name(&self) -> &str {
        "weir_key_not_in_run"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else { return exec_err!("weir_key_not_in_run takes one argument") };
        match arg {
            ColumnarValue::Scalar(s) => {
                let out = match s.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(Some(v)) => !self.keys.contains(&v),
                    _ => true,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(out))))
            }
            ColumnarValue::Array(a) => {
                let values = cast(a, &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                let out: BooleanArray = if values.null_count() == 0 {
                    values.values().iter().map(|v| Some(!self.keys.contains(v))).collect()
                } else {
                    values.iter().map(|v| Some(v.is_none_or(|v| !self.keys.contains(&v)))).collect()
                };
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

/// The function that is true for the rows to keep: key NULL or not in `keys`.
pub(super) fn not_in(keys: Keys) -> ScalarUDF {
    ScalarUDF::from(NotIn { keys: Arc::new(keys), signature: Signature::any(1, Volatility::Immutable) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::*;

    #[tokio::test]
    async fn keeps_the_rows_whose_key_is_null_or_not_in_the_set() {
        let mut keys = Keys::default();
        add(&mut keys, &Int32Array::from(vec![Some(2), None, Some(4), Some(-7)])).unwrap();
        assert_eq!(keys.len(), 3);
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4), Some(5), Some(-7)]))],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let kept =
            ctx.read_batch(batch).unwrap().filter(not_in(keys).call(vec![col("id")])).unwrap().collect().await.unwrap();
        let ids: Vec<Option<i32>> = kept
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int32Type>().iter())
            .collect();
        assert_eq!(ids, vec![Some(1), None, Some(5)]);
    }

    #[test]
    fn integer_types_fit_and_others_do_not() {
        assert!(fits(&DataType::Int64) && fits(&DataType::UInt32));
        assert!(!fits(&DataType::UInt64) && !fits(&DataType::Utf8) && !fits(&DataType::Float64));
    }
}
