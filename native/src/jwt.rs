//! JSON Web Tokens (RFC 7519) with the RFC 8725 best practices: HS256, RS256
//! and EdDSA (Ed25519) over `ring`.
//!
//! Pure Rust; the Python surface lives in `lib.rs`. Rules enforced by
//! [`Verifier::verify`]:
//! * size bound before any decoding, exactly three segments, strict unpadded
//!   base64url (no padding, no stray characters, canonical trailing bits);
//! * the header is a JSON object whose `alg` equals the verifier's algorithm
//!   (`none` in any casing is refused with its own reason), no `crit`;
//! * the signature is checked (constant time, by `ring`) before the payload
//!   is parsed; the payload must be a UTF-8 JSON object; a header member
//!   (`alg`, `crit`) or registered claim given twice is refused;
//! * `exp` is required, `exp`/`nbf`/`iat` must be JSON integers; leeway is
//!   applied to all three; `iss`/`aud` must match when configured, and a
//!   token with `aud` is refused by a verifier with no audience (RFC 7519
//!   §4.1.3); the optional `typ` check reads the claim `typ`, else `type`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::Mutex;
use ring::signature::{self, KeyPair as _};
use ring::{hmac, rand};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::errors::JwtFailure;

pub type Claims = Map<String, Value>;
type Result<T> = std::result::Result<T, JwtFailure>;

/// The algorithms this module signs and verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    RS256,
    EdDSA,
}

impl Algorithm {
    /// Parse the JOSE name, case-sensitively (`"HS256"`, `"RS256"`, `"EdDSA"`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "HS256" => Ok(Algorithm::HS256),
            "RS256" => Ok(Algorithm::RS256),
            "EdDSA" => Ok(Algorithm::EdDSA),
            _ => Err(JwtFailure::UnsupportedAlgorithm),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Whether the crypto is slow enough to be worth releasing the GIL for.
    pub fn is_asymmetric(self) -> bool {
        !matches!(self, Algorithm::HS256)
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// A key able to sign tokens.
pub enum SigningKey {
    Hmac(hmac::Key),
    Rsa(signature::RsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

/// A key able to verify tokens (parsed once, reused for every token).
pub enum VerifyingKey {
    Hmac(hmac::Key),
    /// PKCS#1 `RSAPublicKey` DER, modulus checked to be 2048..=8192 bits.
    Rsa(Vec<u8>),
    Ed25519([u8; 32]),
}

const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const ED25519_OID: &[u8] = &[0x2b, 0x65, 0x70];

/// True when `key` looks like a PEM block or an OpenSSH public key: such a
/// key must never be used as an HMAC secret (algorithm confusion).
fn looks_asymmetric(key: &[u8]) -> bool {
    const MARKERS: [&[u8]; 2] = [b"-----BEGIN", b"-----END"];
    const SSH_PREFIXES: [&[u8]; 5] = [
        b"ssh-rsa",
        b"ssh-ed25519",
        b"ssh-dss",
        b"ecdsa-sha2-",
        b"sk-ssh-",
    ];
    let trimmed = key.trim_ascii_start();
    MARKERS
        .iter()
        .any(|m| key.windows(m.len()).any(|w| w == *m))
        || SSH_PREFIXES.iter().any(|p| trimmed.starts_with(p))
}

fn hmac_key(secret: &[u8]) -> Result<hmac::Key> {
    if secret.is_empty() {
        return Err(JwtFailure::InvalidKey);
    }
    if looks_asymmetric(secret) {
        return Err(JwtFailure::AsymmetricKeyAsSecret);
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
}

fn parse_pem(key: &[u8]) -> Result<pem::Pem> {
    pem::parse(key).map_err(|_| JwtFailure::InvalidKey)
}

/// One DER TLV: returns (tag, contents, rest). Definite lengths only.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// SubjectPublicKeyInfo → (algorithm OID, subjectPublicKey bytes).
fn parse_spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, spki, rest) = der_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, alg_id, rest) = der_tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _params) = der_tlv(alg_id)?;
    if tag != 0x06 {
        return None;
    }
    let (tag, bits, rest) = der_tlv(rest)?;
    if tag != 0x03 || !rest.is_empty() {
        return None;
    }
    let (&unused, key) = bits.split_first()?;
    if unused != 0 {
        return None;
    }
    Some((oid, key))
}

/// Check a PKCS#1 `RSAPublicKey` and return the modulus size in bits.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (tag, seq, rest) = der_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, n, rest) = der_tlv(seq)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, e, rest) = der_tlv(rest)?;
    if tag != 0x02 || !rest.is_empty() || e.is_empty() {
        return None;
    }
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return None,
    };
    Some((n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize))
}

fn rsa_public_der(der: Vec<u8>) -> Result<VerifyingKey> {
    match rsa_modulus_bits(&der) {
        Some(bits) if (2048..=8192).contains(&bits) => Ok(VerifyingKey::Rsa(der)),
        _ => Err(JwtFailure::InvalidKey),
    }
}

fn rsa_private(pem: &pem::Pem) -> Result<signature::RsaKeyPair> {
    match pem.tag() {
        "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(pem.contents()),
        "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(pem.contents()),
        _ => return Err(JwtFailure::InvalidKey),
    }
    .map_err(|_| JwtFailure::InvalidKey)
}

fn ed25519_private(pem: &pem::Pem) -> Result<signature::Ed25519KeyPair> {
    if pem.tag() != "PRIVATE KEY" {
        return Err(JwtFailure::InvalidKey);
    }
    signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pem.contents())
        .map_err(|_| JwtFailure::InvalidKey)
}

impl SigningKey {
    /// HS256: raw secret bytes (PEM/SSH-looking secrets are refused).
    /// RS256: PKCS#1 or PKCS#8 private key PEM. EdDSA: PKCS#8 private key PEM.
    pub fn from_bytes(alg: Algorithm, key: &[u8]) -> Result<Self> {
        match alg {
            Algorithm::HS256 => hmac_key(key).map(SigningKey::Hmac),
            Algorithm::RS256 => rsa_private(&parse_pem(key)?).map(SigningKey::Rsa),
            Algorithm::EdDSA => ed25519_private(&parse_pem(key)?).map(SigningKey::Ed25519),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match self {
            SigningKey::Hmac(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
            SigningKey::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rand::SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(|_| JwtFailure::SigningFailed)?;
                Ok(sig)
            }
            SigningKey::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl VerifyingKey {
    /// HS256: raw secret. RS256: PKCS#1 (`RSA PUBLIC KEY`) or SPKI
    /// (`PUBLIC KEY`) public PEM, or a private PEM whose public half is used.
    /// EdDSA: SPKI public PEM or PKCS#8 private PEM.
    pub fn from_bytes(alg: Algorithm, key: &[u8]) -> Result<Self> {
        match alg {
            Algorithm::HS256 => hmac_key(key).map(VerifyingKey::Hmac),
            Algorithm::RS256 => {
                let pem = parse_pem(key)?;
                match pem.tag() {
                    "RSA PUBLIC KEY" => rsa_public_der(pem.into_contents()),
                    "PUBLIC KEY" => match parse_spki(pem.contents()) {
                        Some((oid, inner)) if oid == RSA_ENCRYPTION_OID => {
                            rsa_public_der(inner.to_vec())
                        }
                        _ => Err(JwtFailure::InvalidKey),
                    },
                    _ => {
                        let pair = rsa_private(&pem)?;
                        rsa_public_der(pair.public().as_ref().to_vec())
                    }
                }
            }
            Algorithm::EdDSA => {
                let pem = parse_pem(key)?;
                match pem.tag() {
                    "PUBLIC KEY" => match parse_spki(pem.contents()) {
                        Some((oid, inner)) if oid == ED25519_OID => inner
                            .try_into()
                            .map(VerifyingKey::Ed25519)
                            .map_err(|_| JwtFailure::InvalidKey),
                        _ => Err(JwtFailure::InvalidKey),
                    },
                    _ => {
                        let pair = ed25519_private(&pem)?;
                        pair.public_key()
                            .as_ref()
                            .try_into()
                            .map(VerifyingKey::Ed25519)
                            .map_err(|_| JwtFailure::InvalidKey)
                    }
                }
            }
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> Result<()> {
        let ok = match self {
            VerifyingKey::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
            VerifyingKey::Rsa(der) => {
                signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                    .verify(message, sig)
                    .is_ok()
            }
            VerifyingKey::Ed25519(pk) => signature::UnparsedPublicKey::new(&signature::ED25519, pk)
                .verify(message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(JwtFailure::BadSignature)
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Sign `claims_json` (a serialised JSON object) into a compact JWS.
///
/// The header is `{"alg": alg, "typ": "JWT"}` merged with `extra_header`
/// (which may override `typ`, or drop it with `"typ": null`, but may not
/// name another `alg`).
pub fn encode(
    alg: Algorithm,
    key: &SigningKey,
    extra_header: Option<&Claims>,
    claims_json: &[u8],
) -> Result<String> {
    let key_fits = matches!(
        (alg, key),
        (Algorithm::HS256, SigningKey::Hmac(_))
            | (Algorithm::RS256, SigningKey::Rsa(_))
            | (Algorithm::EdDSA, SigningKey::Ed25519(_))
    );
    if !key_fits {
        return Err(JwtFailure::InvalidKey);
    }
    let mut header = Map::new();
    header.insert("alg".into(), Value::String(alg.name().into()));
    header.insert("typ".into(), Value::String("JWT".into()));
    if let Some(extra) = extra_header {
        for (name, value) in extra {
            match (name.as_str(), value) {
                ("alg", Value::String(a)) if a == alg.name() => {}
                ("alg", _) => return Err(JwtFailure::BadHeaderParams),
                ("typ", Value::Null) => {
                    header.remove("typ");
                }
                _ => {
                    header.insert(name.clone(), value.clone());
                }
            }
        }
    }
    let header_json = serde_json::to_vec(&header).map_err(|_| JwtFailure::BadHeaderParams)?;

    let mut token = String::with_capacity((header_json.len() + claims_json.len()) * 4 / 3 + 350);
    URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
    let sig = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    Ok(token)
}

/// Parsing a private key (RSA especially) is slow; `jwt_encode` is a free
/// function taking the key every call, so the last few parsed signing keys
/// are kept here, keyed by (algorithm, exact key bytes).
pub fn cached_signing_key(alg: Algorithm, key: &[u8]) -> Result<Arc<SigningKey>> {
    type Entry = (Algorithm, Vec<u8>, Arc<SigningKey>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    const CAPACITY: usize = 8;

    if let Some(hit) = CACHE
        .lock()
        .iter()
        .find(|(a, k, _)| *a == alg && k.as_slice() == key)
    {
        return Ok(Arc::clone(&hit.2));
    }
    let parsed = Arc::new(SigningKey::from_bytes(alg, key)?);
    let mut cache = CACHE.lock();
    if cache.len() >= CAPACITY {
        cache.remove(0);
    }
    cache.push((alg, key.to_vec(), Arc::clone(&parsed)));
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// Claim checks applied after the signature.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Required exact `iss`.
    pub issuer: Option<String>,
    /// Accepted audiences: the token's `aud` (string or list of strings) must
    /// contain at least one of them.
    pub audience: Option<Vec<String>>,
    /// Seconds of clock skew tolerated on `exp`, `nbf`, `iat`.
    pub leeway: u64,
    /// Tokens longer than this are refused before decoding.
    pub max_bytes: usize,
}

/// A verifier bound to one algorithm and one (pre-parsed) key.
pub struct Verifier {
    alg: Algorithm,
    key: VerifyingKey,
    opts: VerifyOptions,
}

fn b64_decode(segment: &[u8]) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtFailure::BadBase64)
}

/// Deserialise a member as its raw JSON text, `null` included (a plain
/// `Option` would turn `null` into "absent").
fn raw<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The JOSE header members we look at; everything else is skipped (but
/// must be valid JSON). Duplicate members are refused by serde.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(default, borrow, deserialize_with = "raw")]
    alg: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    crit: Option<&'a RawValue>,
}

/// The registered claims we check, as raw JSON text.
#[derive(Deserialize)]
struct Registered<'a> {
    #[serde(default, borrow, deserialize_with = "raw")]
    exp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    nbf: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    iat: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    iss: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    aud: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    typ: Option<&'a RawValue>,
    #[serde(rename = "type", default, borrow, deserialize_with = "raw")]
    type_: Option<&'a RawValue>,
}

/// Parse a JSON document that must be an object into `T`.
fn parse_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// A JSON integer literal as i128 (saturating beyond 128 bits); `None` for
/// anything else (floats, exponents, strings, booleans, null).
fn json_integer(raw: &RawValue) -> Option<i128> {
    let text = raw.get();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<i128>().unwrap_or(if text.starts_with('-') {
        i128::MIN
    } else {
        i128::MAX
    }))
}

/// A JSON string member's value (`None` when it is not a string).
fn json_string(raw: &RawValue) -> Option<String> {
    if raw.get().starts_with('"') {
        serde_json::from_str(raw.get()).ok()
    } else {
        None
    }
}

/// Read an integer time claim: `Ok(None)` when absent.
fn time_claim(raw: Option<&RawValue>, not_int: JwtFailure) -> Result<Option<i128>> {
    raw.map(|r| json_integer(r).ok_or(not_int)).transpose()
}

impl Verifier {
    pub fn new(alg: Algorithm, key: &[u8], opts: VerifyOptions) -> Result<Self> {
        if opts.max_bytes == 0 {
            return Err(JwtFailure::BadConfig);
        }
        if let Some(aud) = &opts.audience {
            if aud.is_empty() {
                return Err(JwtFailure::BadConfig);
            }
        }
        let key = VerifyingKey::from_bytes(alg, key)?;
        Ok(Verifier { alg, key, opts })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn options(&self) -> &VerifyOptions {
        &self.opts
    }

    /// Verify `token` at time `now` (Unix seconds) and return its claims.
    pub fn verify(&self, token: &[u8], typ: Option<&str>, now: i64) -> Result<Claims> {
        let payload = self.verify_payload(token, typ, now)?;
        match serde_json::from_slice::<Value>(&payload) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(JwtFailure::BadPayload),
        }
    }

    /// Verify `token` at time `now` and return its payload: UTF-8 JSON text
    /// of an object whose signature and registered claims have been checked.
    /// (For callers that convert the claims straight into another form.)
    pub fn verify_payload(&self, token: &[u8], typ: Option<&str>, now: i64) -> Result<Vec<u8>> {
        let payload = self.verify_signature(token)?;
        if std::str::from_utf8(&payload).is_err() {
            return Err(JwtFailure::BadPayload);
        }
        let claims: Registered<'_> = parse_object(&payload).ok_or(JwtFailure::BadPayload)?;
        self.check_claims(&claims, typ, now)?;
        Ok(payload)
    }

    /// Structural checks, header checks and signature; returns the decoded
    /// payload bytes without looking at them.
    fn verify_signature(&self, token: &[u8]) -> Result<Vec<u8>> {
        if token.len() > self.opts.max_bytes {
            return Err(JwtFailure::TooLarge);
        }
        let mut dots = token
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'.')
            .map(|(i, _)| i);
        let (first, second) = match (dots.next(), dots.next(), dots.next()) {
            (Some(a), Some(b), None) => (a, b),
            _ => return Err(JwtFailure::Malformed),
        };
        let header_b64 = &token[..first];
        let payload_b64 = &token[first + 1..second];
        let sig_b64 = &token[second + 1..];
        if header_b64.is_empty() || payload_b64.is_empty() || sig_b64.is_empty() {
            return Err(JwtFailure::Malformed);
        }

        let header_json = b64_decode(header_b64)?;
        let header: Header<'_> = parse_object(&header_json).ok_or(JwtFailure::BadHeader)?;
        let alg = header.alg.ok_or(JwtFailure::MissingAlgorithm)?;
        // Fast path: the exact, unescaped name.
        let expected = self.alg.name();
        let text = alg.get().as_bytes();
        let exact = text.len() == expected.len() + 2
            && text[0] == b'"'
            && &text[1..text.len() - 1] == expected.as_bytes();
        if !exact {
            match json_string(alg) {
                None => return Err(JwtFailure::MissingAlgorithm),
                Some(a) if a.eq_ignore_ascii_case("none") => return Err(JwtFailure::AlgorithmNone),
                Some(a) if a == expected => {}
                Some(_) => return Err(JwtFailure::AlgorithmMismatch),
            }
        }
        if header.crit.is_some() {
            return Err(JwtFailure::CritUnsupported);
        }

        let sig = b64_decode(sig_b64)?;
        self.key.verify(&token[..second], &sig)?;
        b64_decode(payload_b64)
    }

    /// Registered-claim checks on an authenticated payload.
    fn check_claims(&self, claims: &Registered<'_>, typ: Option<&str>, now: i64) -> Result<()> {
        let now = i128::from(now);
        let leeway = i128::from(self.opts.leeway);

        let exp =
            time_claim(claims.exp, JwtFailure::ExpNotInteger)?.ok_or(JwtFailure::MissingExp)?;
        let nbf = time_claim(claims.nbf, JwtFailure::NbfNotInteger)?;
        let iat = time_claim(claims.iat, JwtFailure::IatNotInteger)?;
        if exp.saturating_add(leeway) <= now {
            return Err(JwtFailure::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(JwtFailure::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Err(JwtFailure::IatInFuture);
        }

        if let Some(issuer) = &self.opts.issuer {
            let iss = claims.iss.ok_or(JwtFailure::MissingIssuer)?;
            if json_string(iss).as_ref() != Some(issuer) {
                return Err(JwtFailure::BadIssuer);
            }
        }

        match (&self.opts.audience, claims.aud) {
            (None, None) => {}
            (None, Some(_)) => return Err(JwtFailure::UnexpectedAudience),
            (Some(_), None) => return Err(JwtFailure::MissingAudience),
            (Some(accepted), Some(aud)) => {
                let ok = match serde_json::from_str::<Value>(aud.get()) {
                    Ok(Value::String(a)) => accepted.contains(&a),
                    Ok(Value::Array(items)) => {
                        let mut any = false;
                        for item in items {
                            match item {
                                Value::String(a) => any |= accepted.contains(&a),
                                _ => return Err(JwtFailure::BadAudience),
                            }
                        }
                        any
                    }
                    _ => false,
                };
                if !ok {
                    return Err(JwtFailure::BadAudience);
                }
            }
        }

        if let Some(expected) = typ {
            let found = claims.typ.or(claims.type_).ok_or(JwtFailure::MissingTyp)?;
            if json_string(found).as_deref() != Some(expected) {
                return Err(JwtFailure::BadTyp);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const SECRET: &[u8] = b"unit-test-secret-unit-test-secret";

    fn opts() -> VerifyOptions {
        VerifyOptions {
            max_bytes: 8192,
            ..Default::default()
        }
    }

    fn hs_token(claims: &Value) -> String {
        let key = SigningKey::from_bytes(Algorithm::HS256, SECRET).unwrap();
        encode(
            Algorithm::HS256,
            &key,
            None,
            &serde_json::to_vec(claims).unwrap(),
        )
        .unwrap()
    }

    fn raw_token(header: &str, payload: &str, key: &[u8]) -> String {
        let mut t = URL_SAFE_NO_PAD.encode(header);
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), t.as_bytes());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        t
    }

    fn hs_verifier(o: VerifyOptions) -> Verifier {
        Verifier::new(Algorithm::HS256, SECRET, o).unwrap()
    }

    fn check(token: &str) -> Result<Claims> {
        hs_verifier(opts()).verify(token.as_bytes(), None, NOW)
    }

    #[test]
    fn hs256_round_trip() {
        let token = hs_token(&json!({"sub": "42", "exp": NOW + 60, "typ": "access"}));
        let v = hs_verifier(opts());
        let claims = v.verify(token.as_bytes(), Some("access"), NOW).unwrap();
        assert_eq!(claims["sub"], json!("42"));
        assert_eq!(
            v.verify(token.as_bytes(), Some("refresh"), NOW),
            Err(JwtFailure::BadTyp)
        );
    }

    #[test]
    fn typ_falls_back_to_type_claim() {
        let token = hs_token(&json!({"exp": NOW + 60, "type": "refresh"}));
        let v = hs_verifier(opts());
        assert!(v.verify(token.as_bytes(), Some("refresh"), NOW).is_ok());
        let token = hs_token(&json!({"exp": NOW + 60}));
        assert_eq!(
            v.verify(token.as_bytes(), Some("refresh"), NOW),
            Err(JwtFailure::MissingTyp)
        );
    }

    #[test]
    fn exp_rules() {
        assert_eq!(
            check(&hs_token(&json!({"sub": "x"}))),
            Err(JwtFailure::MissingExp)
        );
        for bad in [json!(1.0e10), json!("9999999999"), json!(true), json!(null)] {
            assert_eq!(
                check(&hs_token(&json!({"exp": bad}))),
                Err(JwtFailure::ExpNotInteger)
            );
        }
        assert_eq!(
            check(&hs_token(&json!({"exp": NOW}))),
            Err(JwtFailure::Expired)
        );
        assert!(check(&hs_token(&json!({"exp": NOW + 1}))).is_ok());
        // A huge integer is an integer (far future).
        let t = raw_token(
            r#"{"alg":"HS256"}"#,
            r#"{"exp":123456789012345678901234567890123456789012}"#,
            SECRET,
        );
        assert!(check(&t).is_ok());
        let mut o = opts();
        o.leeway = 10;
        let t = hs_token(&json!({"exp": NOW - 5}));
        assert!(hs_verifier(o).verify(t.as_bytes(), None, NOW).is_ok());
    }

    #[test]
    fn nbf_and_iat() {
        assert_eq!(
            check(&hs_token(&json!({"exp": NOW + 60, "nbf": NOW + 30}))),
            Err(JwtFailure::NotYetValid)
        );
        assert_eq!(
            check(&hs_token(&json!({"exp": NOW + 60, "iat": NOW + 30}))),
            Err(JwtFailure::IatInFuture)
        );
        assert_eq!(
            check(&hs_token(&json!({"exp": NOW + 60, "iat": "now"}))),
            Err(JwtFailure::IatNotInteger)
        );
        assert_eq!(
            check(&hs_token(&json!({"exp": NOW + 60, "nbf": 1.5}))),
            Err(JwtFailure::NbfNotInteger)
        );
        assert!(check(&hs_token(&json!({"exp": NOW + 60, "iat": NOW, "nbf": NOW}))).is_ok());
    }

    #[test]
    fn issuer_and_audience() {
        let mut o = opts();
        o.issuer = Some("storefront".into());
        o.audience = Some(vec!["api".into()]);
        let v = hs_verifier(o);
        let ok = hs_token(&json!({"exp": NOW + 60, "iss": "storefront", "aud": ["x", "api"]}));
        assert!(v.verify(ok.as_bytes(), None, NOW).is_ok());
        let cases = [
            (
                json!({"exp": NOW + 60, "aud": "api"}),
                JwtFailure::MissingIssuer,
            ),
            (
                json!({"exp": NOW + 60, "iss": "other", "aud": "api"}),
                JwtFailure::BadIssuer,
            ),
            (
                json!({"exp": NOW + 60, "iss": "storefront"}),
                JwtFailure::MissingAudience,
            ),
            (
                json!({"exp": NOW + 60, "iss": "storefront", "aud": "web"}),
                JwtFailure::BadAudience,
            ),
            (
                json!({"exp": NOW + 60, "iss": "storefront", "aud": ["api", 1]}),
                JwtFailure::BadAudience,
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(v.verify(hs_token(&claims).as_bytes(), None, NOW), Err(want));
        }
        assert_eq!(
            check(&hs_token(&json!({"exp": NOW + 60, "aud": "api"}))),
            Err(JwtFailure::UnexpectedAudience)
        );
    }

    #[test]
    fn header_rules() {
        let p = r#"{"exp":1800000000}"#;
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = raw_token(&format!(r#"{{"alg":"{alg}"}}"#), p, SECRET);
            assert_eq!(check(&t), Err(JwtFailure::AlgorithmNone));
        }
        let t = raw_token(r#"{"alg":"HS512"}"#, p, SECRET);
        assert_eq!(check(&t), Err(JwtFailure::AlgorithmMismatch));
        let t = raw_token(r#"{"alg":"hs256"}"#, p, SECRET);
        assert_eq!(check(&t), Err(JwtFailure::AlgorithmMismatch));
        let t = raw_token(r#"{"typ":"JWT"}"#, p, SECRET);
        assert_eq!(check(&t), Err(JwtFailure::MissingAlgorithm));
        let t = raw_token(r#"{"alg":"HS256","crit":["exp"]}"#, p, SECRET);
        assert_eq!(check(&t), Err(JwtFailure::CritUnsupported));
        let t = raw_token(r#"["HS256"]"#, p, SECRET);
        assert_eq!(check(&t), Err(JwtFailure::BadHeader));
        let t = raw_token(r#"{"alg":"HS256","kid":"k1"}"#, p, SECRET);
        assert!(check(&t).is_ok());
    }

    #[test]
    fn structure_rules() {
        let good = hs_token(&json!({"exp": NOW + 60}));
        let parts: Vec<&str> = good.split('.').collect();
        assert_eq!(check(""), Err(JwtFailure::Malformed));
        assert_eq!(
            check(&format!("{}.{}", parts[0], parts[1])),
            Err(JwtFailure::Malformed)
        );
        assert_eq!(check(&format!("{good}.x")), Err(JwtFailure::Malformed));
        assert_eq!(check(&format!("{good}=")), Err(JwtFailure::BadBase64));
        assert_eq!(
            check(&format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
            Err(JwtFailure::BadBase64)
        );
        assert_eq!(
            check(&format!("{}.{}+.{}", parts[0], parts[1], parts[2])),
            Err(JwtFailure::BadSignature)
        );
        assert_eq!(check("é.é.é"), Err(JwtFailure::BadBase64));
        let mut o = opts();
        o.max_bytes = good.len() - 1;
        assert_eq!(
            hs_verifier(o).verify(good.as_bytes(), None, NOW),
            Err(JwtFailure::TooLarge)
        );
        let t = raw_token(r#"{"alg":"HS256"}"#, r#"[1,2]"#, SECRET);
        assert_eq!(check(&t), Err(JwtFailure::BadPayload));
        let t = raw_token(r#"{"alg":"HS256"}"#, "not json", SECRET);
        assert_eq!(check(&t), Err(JwtFailure::BadPayload));
        let t = raw_token(r#"{"alg":"HS256"}"#, r#"{"exp":1800000000}"#, b"other");
        assert_eq!(check(&t), Err(JwtFailure::BadSignature));
        let truncated = &good[..good.len() - 3];
        assert_eq!(check(truncated), Err(JwtFailure::BadSignature));
    }

    #[test]
    fn hmac_refuses_pem_secret() {
        let pem = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            Verifier::new(Algorithm::HS256, pem, opts()).err(),
            Some(JwtFailure::AsymmetricKeyAsSecret)
        );
        assert_eq!(
            SigningKey::from_bytes(Algorithm::HS256, b"ssh-rsa AAAAB3Nza").err(),
            Some(JwtFailure::AsymmetricKeyAsSecret)
        );
        assert_eq!(
            SigningKey::from_bytes(Algorithm::HS256, b"").err(),
            Some(JwtFailure::InvalidKey)
        );
    }

    #[test]
    fn bad_keys_refused() {
        assert_eq!(
            Verifier::new(Algorithm::RS256, b"not a pem", opts()).err(),
            Some(JwtFailure::InvalidKey)
        );
        assert_eq!(
            SigningKey::from_bytes(Algorithm::EdDSA, b"secret").err(),
            Some(JwtFailure::InvalidKey)
        );
        assert_eq!(
            Algorithm::from_name("none").err(),
            Some(JwtFailure::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn der_helpers() {
        assert_eq!(der_tlv(&[0x30, 0x81]), None);
        assert_eq!(der_tlv(&[0x30, 0x80, 0x00]), None);
        assert_eq!(
            der_tlv(&[0x02, 0x01, 0x05, 0xff]),
            Some((2, &[5u8][..], &[0xffu8][..]))
        );
        // SEQUENCE { INTEGER 0x00ff.., INTEGER 3 } with a 9-bit modulus.
        assert_eq!(
            rsa_modulus_bits(&[0x30, 0x07, 0x02, 0x02, 0x01, 0xff, 0x02, 0x01, 0x03]),
            Some(9)
        );
        assert_eq!(rsa_modulus_bits(&[0x30, 0x00]), None);
    }

    #[test]
    fn ed25519_round_trip() {
        let rng = rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let pub_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));

        let key = SigningKey::from_bytes(Algorithm::EdDSA, pem_text.as_bytes()).unwrap();
        let token = encode(
            Algorithm::EdDSA,
            &key,
            None,
            format!(r#"{{"exp":{}}}"#, NOW + 60).as_bytes(),
        )
        .unwrap();
        for k in [&pub_pem, &pem_text] {
            let v = Verifier::new(Algorithm::EdDSA, k.as_bytes(), opts()).unwrap();
            assert!(v.verify(token.as_bytes(), None, NOW).is_ok());
        }
        // The same token presented to an HS256 verifier: algorithm mismatch.
        assert_eq!(check(&token), Err(JwtFailure::AlgorithmMismatch));
        // Flip one signature byte.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[10] ^= 1;
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(raw));
        let v = Verifier::new(Algorithm::EdDSA, pub_pem.as_bytes(), opts()).unwrap();
        assert_eq!(
            v.verify(forged.as_bytes(), None, NOW),
            Err(JwtFailure::BadSignature)
        );
    }

    #[test]
    fn encode_header_merge() {
        let key = SigningKey::from_bytes(Algorithm::HS256, SECRET).unwrap();
        let mut extra = Map::new();
        extra.insert("kid".into(), json!("k1"));
        extra.insert("typ".into(), Value::Null);
        let t = encode(Algorithm::HS256, &key, Some(&extra), b"{}").unwrap();
        let head = URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        assert_eq!(head, br#"{"alg":"HS256","kid":"k1"}"#);
        extra.insert("alg".into(), json!("none"));
        assert_eq!(
            encode(Algorithm::HS256, &key, Some(&extra), b"{}").err(),
            Some(JwtFailure::BadHeaderParams)
        );
        assert_eq!(
            encode(Algorithm::RS256, &key, None, b"{}").err(),
            Some(JwtFailure::InvalidKey)
        );
    }

    #[test]
    fn signing_key_cache_hits() {
        let a = cached_signing_key(Algorithm::HS256, b"cache-me").unwrap();
        let b = cached_signing_key(Algorithm::HS256, b"cache-me").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
