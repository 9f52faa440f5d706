//! `evgate._native`: the list of exports. The logic lives in the modules beside this file and
//! takes and returns bytes; this file only converts at the Python boundary.

mod hashing;
mod meter;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_secret, m)?)?;
    m.add_function(wrap_pyfunction!(verify_secret, m)?)?;
    m.add_function(wrap_pyfunction!(rollup_1m, m)?)?;
    Ok(())
}
