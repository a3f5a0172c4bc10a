//! Rust error types of the native core, and the one place where they become
//! Python exceptions.
//!
//! The pure-Rust modules (`jwt`, `pricing`, `ratelimit`) only know the enums
//! below; `lib.rs` converts them with `?` through the `From` impls at the end
//! of this file.

use std::fmt;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::PyErr;

create_exception!(
    server._native,
    JwtError,
    PyValueError,
    "A token (or a key) was refused; str(err) is a short reason."
);
create_exception!(
    server._native,
    PricingError,
    PyValueError,
    "Bad cart/promotion input, or an amount overflowed 64 bits."
);
create_exception!(
    server._native,
    RateLimitError,
    PyValueError,
    "Bad rate limiter configuration or argument."
);

/// Why a token or key was refused. `reason()` is the stable, short string that
/// Python sees as `str(JwtError)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtFailure {
    /// Token longer than the verifier's `max_bytes`.
    TooLarge,
    /// Empty token, wrong number of segments, non-ASCII bytes.
    Malformed,
    /// A segment is not strict unpadded base64url.
    BadBase64,
    /// Header is not a JSON object (or not JSON at all / not UTF-8).
    BadHeader,
    /// Header `alg` missing or not a string.
    MissingAlgorithm,
    /// Header `alg` is `none` (any casing).
    AlgorithmNone,
    /// Header `alg` differs from the verifier's algorithm.
    AlgorithmMismatch,
    /// Header carries `crit`: no extension is understood.
    CritUnsupported,
    /// Signature does not verify.
    BadSignature,
    /// Payload is not a JSON object (or not JSON at all / not UTF-8).
    BadPayload,
    MissingExp,
    ExpNotInteger,
    Expired,
    NbfNotInteger,
    NotYetValid,
    IatNotInteger,
    IatInFuture,
    MissingIssuer,
    BadIssuer,
    MissingAudience,
    BadAudience,
    /// Token has `aud` but the verifier was configured without an audience.
    UnexpectedAudience,
    MissingTyp,
    BadTyp,
    /// Unknown / unsupported algorithm name given to the API.
    UnsupportedAlgorithm,
    /// A key that could not be parsed or does not fit the algorithm.
    InvalidKey,
    /// An asymmetric (PEM / SSH) key was given as an HMAC secret.
    AsymmetricKeyAsSecret,
    /// Header parameters given to `encode` are not acceptable.
    BadHeaderParams,
    /// Signing failed inside the crypto library.
    SigningFailed,
    /// Configuration error (e.g. `max_bytes` zero).
    BadConfig,
}

impl JwtFailure {
    pub fn reason(self) -> &'static str {
        use JwtFailure::*;
        match self {
            TooLarge => "token too large",
            Malformed => "malformed",
            BadBase64 => "bad base64",
            BadHeader => "bad header",
            MissingAlgorithm => "missing algorithm",
            AlgorithmNone => "algorithm none refused",
            AlgorithmMismatch => "algorithm mismatch",
            CritUnsupported => "crit header unsupported",
            BadSignature => "bad signature",
            BadPayload => "bad payload",
            MissingExp => "missing exp",
            ExpNotInteger => "exp not integer",
            Expired => "expired",
            NbfNotInteger => "nbf not integer",
            NotYetValid => "not yet valid",
            IatNotInteger => "iat not integer",
            IatInFuture => "iat in future",
            MissingIssuer => "missing issuer",
            BadIssuer => "bad issuer",
            MissingAudience => "missing audience",
            BadAudience => "bad audience",
            UnexpectedAudience => "unexpected audience",
            MissingTyp => "missing typ",
            BadTyp => "typ mismatch",
            UnsupportedAlgorithm => "unsupported algorithm",
            InvalidKey => "invalid key",
            AsymmetricKeyAsSecret => "asymmetric key used as HMAC secret",
            BadHeaderParams => "bad header parameters",
            SigningFailed => "signing failed",
            BadConfig => "bad configuration",
        }
    }
}

impl fmt::Display for JwtFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for JwtFailure {}

/// Why a cart could not be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingFailure {
    /// An amount does not fit in a signed 64-bit integer.
    Overflow,
    /// A field is missing, of the wrong type or out of range; the string
    /// names the field and the problem.
    Invalid(String),
    /// Currency not in the table (or not three upper-case letters).
    UnknownCurrency(String),
}

impl fmt::Display for PricingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PricingFailure::Overflow => f.write_str("amount overflow"),
            PricingFailure::Invalid(msg) => f.write_str(msg),
            PricingFailure::UnknownCurrency(c) => write!(f, "unknown currency: {c:?}"),
        }
    }
}

impl std::error::Error for PricingFailure {}

/// Bad limiter configuration or argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitFailure {
    InvalidLimit,
    InvalidPeriod,
    InvalidBurst,
    InvalidMaxKeys,
    InvalidCost,
    InvalidClock,
}

impl fmt::Display for RateLimitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateLimitFailure::InvalidLimit => "limit must be >= 1",
            RateLimitFailure::InvalidPeriod => {
                "period_seconds must be finite, > 0 and at most ~292 years"
            }
            RateLimitFailure::InvalidBurst => "burst must be >= 1",
            RateLimitFailure::InvalidMaxKeys => "max_keys must be >= 1",
            RateLimitFailure::InvalidCost => "cost must be >= 0",
            RateLimitFailure::InvalidClock => "now must be finite and >= 0",
        })
    }
}

impl std::error::Error for RateLimitFailure {}

// ---- the single mapping to Python exceptions ------------------------------

impl From<JwtFailure> for PyErr {
    fn from(err: JwtFailure) -> PyErr {
        JwtError::new_err(err.reason())
    }
}

impl From<PricingFailure> for PyErr {
    fn from(err: PricingFailure) -> PyErr {
        PricingError::new_err(err.to_string())
    }
}

impl From<RateLimitFailure> for PyErr {
    fn from(err: RateLimitFailure) -> PyErr {
        RateLimitError::new_err(err.to_string())
    }
}
