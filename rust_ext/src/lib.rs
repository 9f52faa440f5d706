//! `evgate._native`: the list of exports. The logic lives in the modules beside this file and
//! takes and returns bytes; this file only converts at the Python boundary.

mod hashing;

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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_secret, m)?)?;
    m.add_function(wrap_pyfunction!(verify_secret, m)?)?;
    Ok(())
}
