//! `evgate._native`: the list of exports. The logic lives in the modules beside this file and
//! takes and returns bytes; this file only converts at the Python boundary.

mod hashing;
mod meter;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// SHA-256 digest (32 bytes) of a secret.
#[pyfunction]
fn hash_secret<'py>(py: Python<'py>, secret: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &hashing::digest(secret))
}

/// Whether `secret` hashes to `digest`, in constant time.
#[pyfunction]
fn verify_secret(secret: &[u8], digest: &[u8]) -> bool {
    hashing::verify(secret, digest)
}

/// HMAC-SHA256 of `message` from a key's schedule (see hashing.rs, hmac_with_state).
#[pyfunction]
fn hmac_with_state<'py>(
    py: Python<'py>,
    state: &[u8],
    message: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let tag = hashing::hmac_with_state(state, message)
        .ok_or_else(|| PyValueError::new_err("an HMAC state is 64 bytes"))?;
    Ok(PyBytes::new(py, &tag))
}

/// Per-minute rollups of a batch of meter values, as binary COPY tuples (see meter.rs).
#[pyfunction]
fn rollup_1m<'py>(
    py: Python<'py>,
    series: &[u8],
    ts_us: &[u8],
    values: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let packed = py
        .detach(|| meter::rollup_1m(series, ts_us, values).map(|r| meter::copy_tuples(&r)))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &packed))
}

/// The meter rows of a batch as binary COPY tuples of `meter_values` (see meter.rs, METER_ROW).
#[pyfunction]
fn copy_meter_rows<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyList>,
    ts_us: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let input = |e: meter::InputError| PyValueError::new_err(e.to_string());
    let times = meter::times(ts_us).map_err(input)?;
    if rows.len() != times.len() {
        return Err(PyValueError::new_err(format!(
            "rows and ts_us hold different row counts: {} and {}",
            rows.len(),
            times.len()
        )));
    }
    let width = meter::METER_ROW.len();
    let mut out = meter::CopyTuples::with_capacity(rows.len() * 128);
    for (row, &time) in rows.iter().zip(&times) {
        let row = row.cast_into::<PyTuple>()?;
        if row.len() != width {
            return Err(PyValueError::new_err(format!(
                "a meter row has {} fields, not {width}",
                row.len()
            )));
        }
        out.begin(width as i16);
        for (i, field) in meter::METER_ROW.iter().enumerate() {
            let item = row.get_borrowed_item(i)?;
            match field {
                // The row's datetime, already converted by the caller (ts_us).
                meter::Field::Time => out.time(time).map_err(input)?,
                _ if item.is_none() => out.null(),
                meter::Field::Text => out
                    .text(item.cast::<PyString>()?.to_str()?)
                    .map_err(input)?,
                meter::Field::Int4 => out.int4(item.extract::<i32>().map_err(|e| {
                    if e.is_instance_of::<PyOverflowError>(py) {
                        PyValueError::new_err("an int4 field is out of range")
                    } else {
                        e
                    }
                })?),
                meter::Field::Float8 => out.float8(item.extract::<f64>()?),
            }
        }
    }
    Ok(PyBytes::new(py, &out.into_bytes()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_secret, m)?)?;
    m.add_function(wrap_pyfunction!(verify_secret, m)?)?;
    m.add_function(wrap_pyfunction!(rollup_1m, m)?)?;
    m.add_function(wrap_pyfunction!(copy_meter_rows, m)?)?;
    m.add_function(wrap_pyfunction!(hmac_with_state, m)?)?;
    Ok(())
}
