//! `server._native`: the Python surface of the storefront's hot paths.
//!
//! Only the module definition and thin wrappers live here; the logic is in
//! [`jwt`], [`pricing`] and [`ratelimit`] (pure Rust), conversions in
//! [`pyconv`], errors and their mapping to Python exceptions in [`errors`].

pub mod errors;
pub mod jwt;
pub mod pricing;
pub mod pyconv;
pub mod ratelimit;

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use errors::{JwtError, JwtFailure, PricingError, RateLimitError, RateLimitFailure};

/// `str` (UTF-8) or `bytes`, borrowed where possible.
fn key_bytes<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(s) = key.downcast::<PyString>() {
        Ok(Cow::Owned(s.to_str()?.as_bytes().to_vec()))
    } else if let Ok(b) = key.downcast::<PyBytes>() {
        Ok(Cow::Borrowed(b.as_bytes()))
    } else {
        Err(PyTypeError::new_err("key must be str or bytes"))
    }
}

fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Sign `claims` into a compact JWS (`header.payload.signature`).
#[pyfunction]
#[pyo3(signature = (claims, key, algorithm = "HS256", headers = None))]
fn jwt_encode(
    py: Python<'_>,
    claims: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    algorithm: &str,
    headers: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let alg = jwt::Algorithm::from_name(algorithm)?;
    let payload = pyconv::dict_to_json(claims, "claims")?;
    let extra = match headers {
        Some(h) if !h.is_none() => Some(pyconv::dict_to_map(h, "headers")?),
        _ => None,
    };
    let key = jwt::cached_signing_key(alg, &key_bytes(key)?)?;
    let sign = || jwt::encode(alg, &key, extra.as_ref(), &payload);
    Ok(if alg.is_asymmetric() {
        py.allow_threads(sign)?
    } else {
        sign()?
    })
}

/// A token verifier bound to one algorithm and one key (parsed once).
#[pyclass(frozen, module = "server._native")]
struct JwtVerifier {
    inner: jwt::Verifier,
}

#[pymethods]
impl JwtVerifier {
    #[new]
    #[pyo3(signature = (key, algorithm, *, issuer = None, audience = None, leeway = 0, max_bytes = 8192))]
    fn new(
        key: &Bound<'_, PyAny>,
        algorithm: &str,
        issuer: Option<String>,
        audience: Option<&Bound<'_, PyAny>>,
        leeway: i64,
        max_bytes: i64,
    ) -> PyResult<Self> {
        let leeway = u64::try_from(leeway).map_err(|_| JwtFailure::BadConfig)?;
        let max_bytes = usize::try_from(max_bytes).map_err(|_| JwtFailure::BadConfig)?;
        let audience = match audience {
            None => None,
            Some(a) if a.is_none() => None,
            Some(a) if a.is_instance_of::<PyString>() => Some(vec![a.extract::<String>()?]),
            Some(a) => Some(a.extract::<Vec<String>>().map_err(|_| {
                PyTypeError::new_err("audience must be a str or a sequence of str")
            })?),
        };
        let opts = jwt::VerifyOptions {
            issuer,
            audience,
            leeway,
            max_bytes,
        };
        let alg = jwt::Algorithm::from_name(algorithm)?;
        Ok(JwtVerifier {
            inner: jwt::Verifier::new(alg, &key_bytes(key)?, opts)?,
        })
    }

    /// Verify `token` and return its claims.
    #[pyo3(signature = (token, *, typ = None, now = None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        token: &Bound<'py, PyAny>,
        typ: Option<&str>,
        now: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let max = self.inner.options().max_bytes;
        let bytes: &[u8] = if let Ok(s) = token.downcast::<PyString>() {
            // Code points never outnumber UTF-8 bytes: refuse before encoding.
            if s.len()? > max {
                return Err(JwtFailure::TooLarge.into());
            }
            s.to_str().map_err(|_| JwtFailure::Malformed)?.as_bytes()
        } else if let Ok(b) = token.downcast::<PyBytes>() {
            b.as_bytes()
        } else {
            return Err(JwtFailure::Malformed.into());
        };
        let now = now.unwrap_or_else(unix_now);
        let payload = if self.inner.algorithm().is_asymmetric() {
            py.allow_threads(|| self.inner.verify_payload(bytes, typ, now))?
        } else {
            self.inner.verify_payload(bytes, typ, now)?
        };
        match pyconv::json_to_py(py, &payload)?.map(|c| c.downcast_into::<PyDict>()) {
            Some(Ok(claims)) => Ok(claims),
            _ => Err(JwtFailure::BadPayload.into()),
        }
    }

    /// The algorithm this verifier accepts.
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm().name()
    }
}

/// Price a cart in integer minor units.
#[pyfunction]
#[pyo3(
    signature = (lines, *, promotion = None, tax_rate_bps = pyconv::TaxRateBps(0), currency = "USD"),
    text_signature = "(lines, *, promotion=None, tax_rate_bps=0, currency=\"USD\")"
)]
fn price_cart<'py>(
    py: Python<'py>,
    lines: &Bound<'py, PyAny>,
    promotion: Option<&Bound<'py, PyAny>>,
    tax_rate_bps: pyconv::TaxRateBps,
    currency: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let lines = pyconv::extract_lines(lines)?;
    let promotion = pyconv::optional_promotion(promotion)?;
    let cart = pricing::price_cart(&lines.lines, promotion.as_ref(), tax_rate_bps.0, currency)?;
    pyconv::priced_cart_to_py(py, &cart, &lines.product_ids)
}

/// The figures of a cart priced by [`price_cart_rows`]: per-line columns
/// (tuples in the order of the rows) and the cart totals.
#[pyclass(frozen, get_all, module = "server._native")]
struct CartFigures {
    line_subtotals: Py<PyTuple>,
    line_discounts: Py<PyTuple>,
    line_totals: Py<PyTuple>,
    subtotal: i64,
    discount: i64,
    tax: i64,
    total: i64,
    promotion_applied: bool,
    currency: &'static str,
    exponent: u32,
}

#[pymethods]
impl CartFigures {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CartFigures(subtotal={}, discount={}, tax={}, total={}, currency={:?}, lines={})",
            self.subtotal,
            self.discount,
            self.tax,
            self.total,
            self.currency,
            self.line_totals.bind(py).len(),
        )
    }
}

/// Price a cart given as rows `(product_id, category_id, unit_price,
/// quantity)`: the same rules and figures as [`price_cart`], without building
/// a dict per line on the way in or out.
#[pyfunction]
#[pyo3(
    signature = (rows, *, promotion = None, tax_rate_bps = pyconv::TaxRateBps(0), currency = "USD"),
    text_signature = "(rows, *, promotion=None, tax_rate_bps=0, currency=\"USD\")"
)]
fn price_cart_rows(
    py: Python<'_>,
    rows: &Bound<'_, PyAny>,
    promotion: Option<&Bound<'_, PyAny>>,
    tax_rate_bps: pyconv::TaxRateBps,
    currency: &str,
) -> PyResult<CartFigures> {
    let lines = pyconv::extract_rows(rows)?;
    let promotion = pyconv::optional_promotion(promotion)?;
    let cart = pricing::price_cart(&lines, promotion.as_ref(), tax_rate_bps.0, currency)?;
    let [line_subtotals, line_discounts, line_totals] = pyconv::line_columns(py, &cart)?;
    Ok(CartFigures {
        line_subtotals: line_subtotals.unbind(),
        line_discounts: line_discounts.unbind(),
        line_totals: line_totals.unbind(),
        subtotal: cart.subtotal,
        discount: cart.discount,
        tax: cart.tax,
        total: cart.total,
        promotion_applied: cart.promotion_applied,
        currency: cart.currency,
        exponent: cart.exponent,
    })
}

/// Keyed GCRA rate limiter; thread-safe, bounded memory.
#[pyclass(frozen, module = "server._native")]
struct RateLimiter {
    inner: ratelimit::RateLimiter,
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(signature = (limit, period_seconds, *, burst = None, max_keys = 1_000_000))]
    fn new(limit: i64, period_seconds: f64, burst: Option<i64>, max_keys: i64) -> PyResult<Self> {
        let limit = u64::try_from(limit).map_err(|_| RateLimitFailure::InvalidLimit)?;
        let burst = burst
            .map(u64::try_from)
            .transpose()
            .map_err(|_| RateLimitFailure::InvalidBurst)?;
        let max_keys = usize::try_from(max_keys).map_err(|_| RateLimitFailure::InvalidMaxKeys)?;
        Ok(RateLimiter {
            inner: ratelimit::RateLimiter::new(limit, period_seconds, burst, max_keys)?,
        })
    }

    /// `(allowed, remaining, reset_after, retry_after)`; see the stub.
    #[pyo3(signature = (key, cost = 1, now = None))]
    fn check(&self, key: &str, cost: i64, now: Option<f64>) -> PyResult<(bool, u64, f64, f64)> {
        let cost = u64::try_from(cost).map_err(|_| RateLimitFailure::InvalidCost)?;
        let d = match now {
            None => self.inner.check_now(key, cost),
            Some(t) => self.inner.check_at(key, cost, t)?,
        };
        Ok((d.allowed, d.remaining, d.reset_after, d.retry_after))
    }

    /// Forget every key.
    fn clear(&self) {
        self.inner.clear();
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.inner.limit()
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.inner.burst()
    }

    #[getter]
    fn period_seconds(&self) -> f64 {
        self.inner.period_ns() as f64 / 1e9
    }

    /// Largest number of keys held at once.
    #[getter]
    fn max_keys(&self) -> usize {
        self.inner.capacity()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(jwt_encode, m)?)?;
    m.add_function(wrap_pyfunction!(price_cart, m)?)?;
    m.add_function(wrap_pyfunction!(price_cart_rows, m)?)?;
    m.add_class::<CartFigures>()?;
    m.add_class::<JwtVerifier>()?;
    m.add_class::<RateLimiter>()?;
    m.add("JwtError", py.get_type::<JwtError>())?;
    m.add("PricingError", py.get_type::<PricingError>())?;
    m.add("RateLimitError", py.get_type::<RateLimitError>())?;
    Ok(())
}
