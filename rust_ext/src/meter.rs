//! Per-minute meter rollups: min, max, sum, count, first and last of each series and minute.
//!
//! The writer hands in one batch of numeric meter values as three flat little-endian buffers
//! of equal length (a series id `u32`, a time in microseconds since the Unix epoch `i64`, a
//! value `f64` per row) and gets back one record per (series, minute), sorted by series then
//! minute, each already a tuple of PostgreSQL's binary COPY format: the writer streams them
//! into its staging table as they are, with no per-row work in Python (see [`copy_tuples`]).
//! `evgate.native.pure_rollup_1m` is the pure-Python twin; both follow exactly the same rules,
//! so their outputs are equal byte for byte:
//!
//! * a time beyond ±2^62 µs (±146,000 years) is refused, so no arithmetic on it can overflow;
//! * a NaN value is skipped (it has no order, so no min, max, first or last);
//! * the minute of a row is `floor(ts / 60_000_000) * 60_000_000`, negative times included;
//! * sum adds a series' values in input order (floating-point addition is not associative);
//! * min and max replace only on a strict `<` / `>` (so the first of equal values stays);
//! * first is the value of the earliest row, the first in input order among equals; last is
//!   the value of the latest row, the last in input order among equals.
//!
//! The writer also hands over the batch's meter rows themselves, to be encoded as binary COPY
//! tuples of `meter_values` ([`METER_ROW`], written field by field with [`CopyTuples`]):
//! asyncpg's per-field encoding of the same rows cost a third of the writer's Python time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate hasher for the (series, minute) keys: they are ours, not an attacker's,
/// and the standard SipHash costs more than the aggregation itself.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyMap = HashMap<(u32, i64), usize, BuildHasherDefault<KeyHasher>>;

/// Microseconds in a minute.
pub const MINUTE_US: i64 = 60_000_000;

/// The largest time accepted, either side of the epoch.
pub const MAX_ABS_US: i64 = 1 << 62;

/// PostgreSQL's epoch (2000-01-01) in microseconds since the Unix epoch: binary timestamps
/// count from it.
pub const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The fields of one record: series, minute, min, max, sum, count, first at, first value,
/// last at, last value.
pub const FIELDS: i16 = 10;

/// Size in bytes of one output record: the field count (`i16`), then each field's length
/// (`i32`) and value, all big-endian: `>h ii iq id id id iq iq id iq id`.
pub const RECORD_SIZE: usize = 2 + 4 * 10 + 4 + 8 * 9;

/// The aggregate of one series over one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    pub series: u32,
    pub minute_us: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    pub first_us: i64,
    pub first: f64,
    pub last_us: i64,
    pub last: f64,
}

/// What went wrong with the input buffers.
#[derive(Debug, PartialEq, Eq)]
pub enum InputError {
    /// A buffer's length is not a multiple of its element size.
    Ragged(&'static str),
    /// The three buffers do not hold the same number of rows.
    LengthMismatch {
        series: usize,
        ts: usize,
        values: usize,
    },
    /// A time lies beyond [`MAX_ABS_US`].
    TimeOutOfRange(i64),
    /// A text longer than a COPY field can hold (2^31 - 1 bytes).
    TextTooLong(usize),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::Ragged(name) => {
                write!(f, "{name}: length is not a multiple of its item size")
            }
            InputError::LengthMismatch { series, ts, values } => write!(
                f,
                "buffers hold different row counts: series {series}, ts {ts}, values {values}"
            ),
            InputError::TimeOutOfRange(t) => write!(f, "time out of range: {t} µs"),
            InputError::TextTooLong(n) => write!(f, "text of {n} bytes is too long for COPY"),
        }
    }
}

fn rows<const N: usize>(buf: &[u8], name: &'static str) -> Result<usize, InputError> {
    if !buf.len().is_multiple_of(N) {
        return Err(InputError::Ragged(name));
    }
    Ok(buf.len() / N)
}

/// Aggregate the rows into per-(series, minute) rollups, sorted by series then minute.
pub fn rollup_1m(series: &[u8], ts_us: &[u8], values: &[u8]) -> Result<Vec<Rollup>, InputError> {
    let n = rows::<4>(series, "series")?;
    let n_ts = rows::<8>(ts_us, "ts_us")?;
    let n_values = rows::<8>(values, "values")?;
    if n != n_ts || n != n_values {
        return Err(InputError::LengthMismatch {
            series: n,
            ts: n_ts,
            values: n_values,
        });
    }
    let mut index = KeyMap::default();
    let mut out: Vec<Rollup> = Vec::new();
    let series_it = series
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()));
    let ts_it = ts_us
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()));
    let values_it = values
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()));
    for ((s, t), v) in series_it.zip(ts_it).zip(values_it) {
        if !(-MAX_ABS_US..=MAX_ABS_US).contains(&t) {
            return Err(InputError::TimeOutOfRange(t));
        }
        if v.is_nan() {
            continue;
        }
        let minute = t.div_euclid(MINUTE_US) * MINUTE_US;
        match index.get(&(s, minute)) {
            Some(&i) => {
                let r = &mut out[i];
                if v < r.min {
                    r.min = v;
                }
                if v > r.max {
                    r.max = v;
                }
                r.sum += v;
                r.count += 1;
                if t < r.first_us {
                    r.first_us = t;
                    r.first = v;
                }
                if t >= r.last_us {
                    r.last_us = t;
                    r.last = v;
                }
            }
            None => {
                index.insert((s, minute), out.len());
                out.push(Rollup {
                    series: s,
                    minute_us: minute,
                    min: v,
                    max: v,
                    sum: v,
                    count: 1,
                    first_us: t,
                    first: v,
                    last_us: t,
                    last: v,
                });
            }
        }
    }
    out.sort_unstable_by_key(|r| (r.series, r.minute_us));
    Ok(out)
}

/// The rollups as tuples of PostgreSQL's binary COPY format, `RECORD_SIZE` bytes each, for a
/// table `(int4, timestamptz, float8, float8, float8, int8, timestamptz, float8, timestamptz,
/// float8)`. Times count from PostgreSQL's epoch; a series id is sent as the int4 of its bits.
/// The stream's header and trailer are the caller's (`evgate.native.COPY_HEADER`,
/// `COPY_TRAILER`).
pub fn copy_tuples(rollups: &[Rollup]) -> Vec<u8> {
    let mut out = CopyTuples::with_capacity(rollups.len() * RECORD_SIZE);
    for r in rollups {
        out.begin(FIELDS);
        out.int4(r.series as i32);
        // Rollup times come from checked row times floored to a minute: always in range.
        out.time_unchecked(r.minute_us);
        out.float8(r.min);
        out.float8(r.max);
        out.float8(r.sum);
        out.int8(r.count as i64);
        out.time_unchecked(r.first_us);
        out.float8(r.first);
        out.time_unchecked(r.last_us);
        out.float8(r.last);
    }
    out.into_bytes()
}

/// The binary COPY type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `text`: the UTF-8 bytes.
    Text,
    /// `int4`.
    Int4,
    /// `timestamptz`, from a time in µs since the Unix epoch.
    Time,
    /// `float8`.
    Float8,
}

/// The columns of a `meter_values` row, in `evgate.storage.meter_values.METER_COLUMNS` order:
/// charger_id, connector_id, transaction_id, ts, measurand, phase, location, context, format,
/// unit, value, raw_value.
pub const METER_ROW: [Field; 12] = [
    Field::Text,
    Field::Int4,
    Field::Int4,
    Field::Time,
    Field::Text,
    Field::Text,
    Field::Text,
    Field::Text,
    Field::Text,
    Field::Text,
    Field::Float8,
    Field::Text,
];

/// Tuples of PostgreSQL's binary COPY format, written one field at a time: each tuple is its
/// field count, then each field's length (-1 for NULL) and big-endian value.
pub struct CopyTuples {
    buf: Vec<u8>,
}

impl CopyTuples {
    pub fn with_capacity(bytes: usize) -> Self {
        CopyTuples {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Start a tuple of `fields` fields.
    pub fn begin(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn text(&mut self, value: &str) -> Result<(), InputError> {
        let len = i32::try_from(value.len()).map_err(|_| InputError::TextTooLong(value.len()))?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        Ok(())
    }

    pub fn int4(&mut self, value: i32) {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn float8(&mut self, value: f64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A `timestamptz` from µs since the Unix epoch; refused beyond [`MAX_ABS_US`].
    pub fn time(&mut self, unix_us: i64) -> Result<(), InputError> {
        if !(-MAX_ABS_US..=MAX_ABS_US).contains(&unix_us) {
            return Err(InputError::TimeOutOfRange(unix_us));
        }
        self.time_unchecked(unix_us);
        Ok(())
    }

    fn time_unchecked(&mut self, unix_us: i64) {
        self.int8(unix_us - PG_EPOCH_US);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// The `i64` times of a little-endian buffer.
pub fn times(ts_us: &[u8]) -> Result<Vec<i64>, InputError> {
    rows::<8>(ts_us, "ts_us")?;
    Ok(ts_us
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers(rows: &[(u32, i64, f64)]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut s = Vec::new();
        let mut t = Vec::new();
        let mut v = Vec::new();
        for (series, ts, value) in rows {
            s.extend_from_slice(&series.to_le_bytes());
            t.extend_from_slice(&ts.to_le_bytes());
            v.extend_from_slice(&value.to_le_bytes());
        }
        (s, t, v)
    }

    fn run(rows: &[(u32, i64, f64)]) -> Vec<Rollup> {
        let (s, t, v) = buffers(rows);
        rollup_1m(&s, &t, &v).unwrap()
    }

    #[test]
    fn aggregates_one_series_per_minute() {
        let out = run(&[
            (0, 1_000_000, 5.0),
            (0, 61_000_000, 7.0),
            (0, 2_000_000, 3.0),
        ]);
        assert_eq!(out.len(), 2);
        let r = out[0];
        assert_eq!((r.series, r.minute_us), (0, 0));
        assert_eq!((r.min, r.max, r.sum, r.count), (3.0, 5.0, 8.0, 2));
        assert_eq!(
            (r.first_us, r.first, r.last_us, r.last),
            (1_000_000, 5.0, 2_000_000, 3.0)
        );
        assert_eq!((out[1].minute_us, out[1].count), (MINUTE_US, 1));
    }

    #[test]
    fn first_and_last_follow_time_not_input_order() {
        let out = run(&[(1, 30, 2.0), (1, 10, 1.0), (1, 50, 3.0), (1, 20, 9.0)]);
        assert_eq!((out[0].first, out[0].last), (1.0, 3.0));
    }

    #[test]
    fn ties_keep_the_first_for_first_and_the_last_for_last() {
        let out = run(&[(0, 10, 1.0), (0, 10, 2.0), (0, 10, 3.0)]);
        assert_eq!((out[0].first, out[0].last), (1.0, 3.0));
    }

    #[test]
    fn negative_times_floor_to_their_minute() {
        let out = run(&[(0, -1, 1.0)]);
        assert_eq!(out[0].minute_us, -MINUTE_US);
    }

    #[test]
    fn nan_is_skipped_and_sorted_by_series_then_minute() {
        let out = run(&[
            (2, 0, 1.0),
            (1, MINUTE_US, f64::NAN),
            (1, 0, 4.0),
            (0, MINUTE_US, 2.0),
        ]);
        let keys: Vec<_> = out.iter().map(|r| (r.series, r.minute_us)).collect();
        assert_eq!(keys, vec![(0, MINUTE_US), (1, 0), (2, 0)]);
    }

    #[test]
    fn refuses_ragged_or_mismatched_buffers() {
        assert_eq!(
            rollup_1m(&[0; 3], &[], &[]),
            Err(InputError::Ragged("series"))
        );
        assert_eq!(
            rollup_1m(&[0; 4], &[], &[]),
            Err(InputError::LengthMismatch {
                series: 1,
                ts: 0,
                values: 0
            })
        );
        assert_eq!(rollup_1m(&[], &[], &[]), Ok(vec![]));
    }

    #[test]
    fn refuses_times_beyond_the_range() {
        let (s, t, v) = buffers(&[(0, MAX_ABS_US + 1, 1.0)]);
        assert_eq!(
            rollup_1m(&s, &t, &v),
            Err(InputError::TimeOutOfRange(MAX_ABS_US + 1))
        );
        let (s, t, v) = buffers(&[(0, -MAX_ABS_US, 1.0)]);
        assert!(rollup_1m(&s, &t, &v).is_ok());
    }

    #[test]
    fn copy_fields_are_big_endian_with_lengths_and_null_is_minus_one() {
        let mut out = CopyTuples::with_capacity(0);
        out.begin(4);
        out.text("ab").unwrap();
        out.null();
        out.int4(-2);
        out.time(PG_EPOCH_US - 1).unwrap();
        assert_eq!(
            out.into_bytes(),
            [
                &[0, 4][..],
                &[0, 0, 0, 2, b'a', b'b'],
                &[0xff, 0xff, 0xff, 0xff],
                &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfe],
                &[0, 0, 0, 8],
                &(-1i64).to_be_bytes(),
            ]
            .concat()
        );
        let mut out = CopyTuples::with_capacity(0);
        assert_eq!(
            out.time(-MAX_ABS_US - 1),
            Err(InputError::TimeOutOfRange(-MAX_ABS_US - 1))
        );
        assert_eq!(times(&[0; 7]), Err(InputError::Ragged("ts_us")));
        assert_eq!(times(&(-5i64).to_le_bytes()), Ok(vec![-5]));
    }

    #[test]
    fn copy_tuples_are_big_endian_with_field_lengths() {
        let out = run(&[(7, PG_EPOCH_US + 1, 1.5)]);
        let bytes = copy_tuples(&out);
        assert_eq!(bytes.len(), RECORD_SIZE);
        assert_eq!(&bytes[..2], &10i16.to_be_bytes());
        assert_eq!(&bytes[2..10], &[0, 0, 0, 4, 0, 0, 0, 7]);
        // minute: PostgreSQL's epoch itself
        assert_eq!(&bytes[10..22], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[26..34], &1.5f64.to_be_bytes());
        // first at: one microsecond past it
        assert_eq!(&bytes[74..82], &1i64.to_be_bytes());
    }
}
