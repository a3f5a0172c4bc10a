//! Fuzzing the JWT entry points the pyo3 layer calls (`jwt::Verifier::new`,
//! `Verifier::verify_payload` / `verify`, `jwt::encode`,
//! `jwt::cached_signing_key`), with proptest on stable Rust.
//!
//! * arbitrary bytes, token-shaped strings, mutated and truncated valid
//!   tokens: never a panic, never accepted;
//! * correctly signed but hostile tokens (odd `alg` headers, duplicate
//!   members, huge or non-integer `exp`/`nbf`/`iat`, odd `aud`/`iss`/`typ`,
//!   nested JSON, non-UTF-8 payloads): the outcome equals a model of the
//!   documented rules (`jwt.rs` module docs), refusal reason included;
//! * sign → verify round trips (HS256, EdDSA) give the claims back;
//! * key parsing of arbitrary and mutated PEM/DER never panics;
//! * the seed corpus in `fuzz/corpus/jwt/` (expected outcome in each file
//!   name) runs every time.
//!
//! Volume: `PROPTEST_CASES` (default 256 per property); `make fuzz` runs many
//! more in release mode. Failures found are persisted (and meant to be
//! committed) in `fuzz/proptest-regressions/fuzz_jwt.txt`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use ring::hmac;
use serde_json::{Map, Number, Value};
use storefront_native::errors::JwtFailure;
use storefront_native::jwt::{self, Algorithm, SigningKey, Verifier, VerifyOptions};

/// The clock of the corpus and of most properties.
const NOW: i64 = 1_700_000_000;
/// The HS256 secret the corpus tokens are signed with.
const CORPUS_SECRET: &[u8] = b"storefront-fuzz-corpus-secret-0123456789";
const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";

fn config(divisor: u32) -> Config {
    let mut config = Config::default(); // reads PROPTEST_CASES
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config.cases = (config.cases / divisor).max(1);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/proptest-regressions/fuzz_jwt.txt"
    ))));
    config
}

/// Generous size bound: hostile claims can be big, and the size check is
/// a test of its own.
fn opts(leeway: u64) -> VerifyOptions {
    VerifyOptions {
        leeway,
        max_bytes: 1 << 20,
        ..Default::default()
    }
}

/// Ed25519 PKCS#8 v1 DER of a fixed seed (deterministic signatures, so a
/// failing case replays exactly).
fn ed25519_pkcs8(seed: [u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    der
}

fn ed25519_spki(public: &[u8]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(public);
    der
}

struct EdKeys {
    private_pem: String,
    public_pem: String,
    signing: SigningKey,
    verifier: Verifier,
}

static ED: LazyLock<EdKeys> = LazyLock::new(|| {
    let pkcs8 = ed25519_pkcs8([7; 32]);
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.clone()));
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", ed25519_spki(&public)));
    EdKeys {
        signing: SigningKey::from_bytes(Algorithm::EdDSA, private_pem.as_bytes()).unwrap(),
        verifier: Verifier::new(Algorithm::EdDSA, public_pem.as_bytes(), opts(0)).unwrap(),
        private_pem,
        public_pem,
    }
});

static HS_SIGNING: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::from_bytes(Algorithm::HS256, SECRET).unwrap());
static HS_VERIFIER: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::new(Algorithm::HS256, SECRET, opts(0)).unwrap());

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// `header.payload.signature` with the given raw segment bytes, HS256-signed
/// with `key` (whatever the header says).
fn hs_forge(header: &[u8], payload: &[u8], key: &[u8]) -> String {
    let mut token = format!("{}.{}", b64(header), b64(payload));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), token.as_bytes());
    token.push('.');
    token.push_str(&b64(tag.as_ref()));
    token
}

fn json_text(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Arbitrary JSON values (big and fractional numbers included), nesting
/// bounded well below serde_json's recursion limit.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        "[1-9][0-9]{20,60}".prop_map(|d| Value::Number(d.parse().unwrap())),
        any::<String>().prop_map(Value::String),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec(("\\PC{0,8}", inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A header `alg` member value: (JSON text, the string it decodes to).
fn alg_value() -> impl Strategy<Value = (String, Option<String>)> {
    let named = |text: &str, decoded: &str| Just((text.to_string(), Some(decoded.to_string())));
    prop_oneof![
        4 => named("\"HS256\"", "HS256"),
        1 => named("\"HS\\u0032\\u00356\"", "HS256"),
        1 => named("\"hs256\"", "hs256"),
        1 => named("\"HS256 \"", "HS256 "),
        1 => named("\"none\"", "none"),
        1 => named("\"NoNe\"", "NoNe"),
        1 => named("\"\\u006eone\"", "none"),
        1 => named("\"RS256\"", "RS256"),
        1 => named("\"EdDSA\"", "EdDSA"),
        1 => named("\"HS512\"", "HS512"),
        1 => named("\"\"", ""),
        1 => any::<String>().prop_map(|s| (json_text(&s), Some(s))),
        1 => prop_oneof![
            Just("null"),
            Just("1"),
            Just("true"),
            Just("[\"HS256\"]"),
            Just("{\"alg\":\"HS256\"}"),
            Just("1e400"),
        ]
        .prop_map(|t| (t.to_string(), None)),
    ]
}

/// Names that are not header members we look at.
fn extra_name() -> impl Strategy<Value = String> {
    "\\PC{0,10}".prop_filter("not alg/crit", |n| n != "alg" && n != "crit")
}

#[derive(Debug, Clone)]
struct HostileHeader {
    text: String,
    /// `Err` = the refusal the documented rules call for; `Ok` = accepted.
    expect: Result<(), JwtFailure>,
}

fn hostile_header() -> impl Strategy<Value = HostileHeader> {
    let members = (
        vec(alg_value(), 0..3),
        prop_oneof![Just("\"alg\""), Just("\"\\u0061lg\"")],
        vec(json_value(), 0..2),
        vec((extra_name(), json_value()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(algs, alg_name, crits, extras, crit_first)| {
            let mut members: Vec<String> = extras
                .iter()
                .map(|(n, v)| format!("{}:{}", json_text(n), v))
                .collect();
            let alg_members = algs.iter().map(|(t, _)| format!("{alg_name}:{t}"));
            let crit_members = crits.iter().map(|v| format!("\"crit\":{v}"));
            if crit_first {
                members.splice(0..0, crit_members.chain(alg_members));
            } else {
                members.extend(alg_members.chain(crit_members));
            }
            let expect = if algs.len() > 1 || crits.len() > 1 {
                Err(JwtFailure::BadHeader)
            } else {
                match algs.first() {
                    None | Some((_, None)) => Err(JwtFailure::MissingAlgorithm),
                    Some((_, Some(a))) if a.eq_ignore_ascii_case("none") => {
                        Err(JwtFailure::AlgorithmNone)
                    }
                    Some((_, Some(a))) if a != "HS256" => Err(JwtFailure::AlgorithmMismatch),
                    Some(_) if !crits.is_empty() => Err(JwtFailure::CritUnsupported),
                    Some(_) => Ok(()),
                }
            };
            HostileHeader {
                text: format!("{{{}}}", members.join(",")),
                expect,
            }
        });
    let not_object = prop_oneof![
        Just("[\"HS256\"]"),
        Just("\"HS256\""),
        Just("null"),
        Just("{"),
        Just("{\"alg\":\"HS256\""),
        Just("{\"alg\":\"HS256\"} x"),
        Just("{\"alg\":\"HS256\",}"),
        Just(""),
    ]
    .prop_map(|t| HostileHeader {
        text: t.to_string(),
        // An empty segment is a structural error, found before decoding.
        expect: Err(if t.is_empty() {
            JwtFailure::Malformed
        } else {
            JwtFailure::BadHeader
        }),
    });
    prop_oneof![8 => members, 1 => not_object]
}

/// A time claim: its JSON text and, when it is an integer literal, the
/// value the rules read (saturated to i128).
#[derive(Debug, Clone)]
struct TimeValue {
    text: String,
    value: Option<i128>,
}

fn time_value() -> impl Strategy<Value = TimeValue> {
    let now = i128::from(NOW);
    let int = |v: i128| TimeValue {
        text: v.to_string(),
        value: Some(v),
    };
    prop_oneof![
        4 => (-100_000i128..100_000).prop_map(move |d| int(now + d)),
        2 => any::<i64>().prop_map(move |v| int(v.into())),
        1 => any::<i128>().prop_map(int),
        1 => prop_oneof![
            Just(i128::MIN),
            Just(i128::MAX),
            Just(i64::MIN.into()),
            Just(i64::MAX.into()),
            Just(u64::MAX.into()),
            Just(0),
        ]
        .prop_map(int),
        // Beyond i128: saturated.
        1 => (any::<bool>(), "[1-9][0-9]{40,80}").prop_map(|(negative, digits)| TimeValue {
            text: format!("{}{digits}", if negative { "-" } else { "" }),
            value: Some(if negative { i128::MIN } else { i128::MAX }),
        }),
        1 => Just(TimeValue { text: "-0".into(), value: Some(0) }),
        1 => prop_oneof![
            Just("1.0"),
            Just("1700000000.5"),
            Just("1e10"),
            Just("-2.5E-3"),
            Just("1E400"),
            Just("\"1800000000\""),
            Just("true"),
            Just("null"),
            Just("[1800000000]"),
            Just("{\"v\":1800000000}"),
        ]
        .prop_map(|t| TimeValue { text: t.into(), value: None }),
    ]
}

/// A JSON value for `iss`/`aud`/`typ`: mostly strings near the expected ones.
fn claim_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"storefront\"".to_string()),
        Just("\"api\"".to_string()),
        Just("\"access\"".to_string()),
        Just("\"refresh\"".to_string()),
        Just("[\"web\",\"api\"]".to_string()),
        Just("[\"web\"]".to_string()),
        Just("[\"api\",1]".to_string()),
        Just("[]".to_string()),
        Just("\"\\u0061pi\"".to_string()),
        json_value().prop_map(|v| v.to_string()),
    ]
}

const REGISTERED: [&str; 7] = ["exp", "nbf", "iat", "iss", "aud", "typ", "type"];

#[derive(Debug, Clone)]
struct HostilePayload {
    members: Vec<(String, String)>,
    exp: Option<TimeValue>,
    nbf: Option<TimeValue>,
    iat: Option<TimeValue>,
    iss: Option<String>,
    aud: Option<String>,
    typ: Option<String>,
    type_: Option<String>,
    duplicate: bool,
}

impl HostilePayload {
    fn text(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|(n, v)| format!("{}:{v}", json_text(n)))
            .collect();
        format!("{{{}}}", members.join(","))
    }
}

fn hostile_payload() -> impl Strategy<Value = HostilePayload> {
    (
        proptest::option::weighted(0.9, time_value()),
        proptest::option::of(time_value()),
        proptest::option::of(time_value()),
        proptest::option::weighted(0.2, claim_value()),
        proptest::option::weighted(0.2, claim_value()),
        proptest::option::of(claim_value()),
        proptest::option::weighted(0.2, claim_value()),
        vec(
            (
                "\\PC{0,10}".prop_filter("unregistered", |n| !REGISTERED.contains(&n.as_str())),
                json_value(),
            ),
            0..4,
        ),
        proptest::option::weighted(0.05, 0usize..7),
        any::<u64>(),
    )
        .prop_map(
            |(exp, nbf, iat, iss, aud, typ, type_, extras, dup, order)| {
                let mut members: Vec<(String, String)> = extras
                    .into_iter()
                    .map(|(n, v)| (n, v.to_string()))
                    .collect();
                let registered = [
                    ("exp", exp.as_ref().map(|t| t.text.clone())),
                    ("nbf", nbf.as_ref().map(|t| t.text.clone())),
                    ("iat", iat.as_ref().map(|t| t.text.clone())),
                    ("iss", iss.clone()),
                    ("aud", aud.clone()),
                    ("typ", typ.clone()),
                    ("type", type_.clone()),
                ];
                for (i, (name, value)) in registered.iter().enumerate() {
                    if let Some(v) = value {
                        // Interleave with the extras in an arbitrary order.
                        let at = (order as usize).wrapping_add(i * 7) % (members.len() + 1);
                        members.insert(at, (name.to_string(), v.clone()));
                    }
                }
                let mut duplicate = false;
                if let Some((name, Some(value))) = dup.map(|d| &registered[d]) {
                    members.push((name.to_string(), value.clone()));
                    duplicate = true;
                }
                HostilePayload {
                    members,
                    exp,
                    nbf,
                    iat,
                    iss,
                    aud,
                    typ,
                    type_,
                    duplicate,
                }
            },
        )
}

/// Which verifier a hostile payload is checked by.
#[derive(Debug, Clone, Copy)]
enum Policy {
    /// No issuer, no audience.
    Plain,
    /// `iss == "storefront"`, `aud` contains "api" or "mobile".
    Strict,
}

fn json_str(text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) if text.starts_with('"') => Some(s),
        _ => None,
    }
}

/// The documented claim rules (`Verifier::check_claims`), as a model.
fn expected_claims(
    p: &HostilePayload,
    policy: Policy,
    leeway: u64,
    typ: Option<&str>,
    now: i64,
) -> Result<(), JwtFailure> {
    if p.duplicate {
        return Err(JwtFailure::BadPayload);
    }
    let (now, leeway) = (i128::from(now), i128::from(leeway));
    let int = |v: &Option<TimeValue>, e| v.as_ref().map(|t| t.value.ok_or(e)).transpose();
    let exp = int(&p.exp, JwtFailure::ExpNotInteger)?.ok_or(JwtFailure::MissingExp)?;
    let nbf = int(&p.nbf, JwtFailure::NbfNotInteger)?;
    let iat = int(&p.iat, JwtFailure::IatNotInteger)?;
    if exp.saturating_add(leeway) <= now {
        return Err(JwtFailure::Expired);
    }
    if nbf.is_some_and(|v| v > now + leeway) {
        return Err(JwtFailure::NotYetValid);
    }
    if iat.is_some_and(|v| v > now + leeway) {
        return Err(JwtFailure::IatInFuture);
    }
    match policy {
        Policy::Plain => {
            if p.aud.is_some() {
                return Err(JwtFailure::UnexpectedAudience);
            }
        }
        Policy::Strict => {
            let iss = p.iss.as_deref().ok_or(JwtFailure::MissingIssuer)?;
            if json_str(iss).as_deref() != Some("storefront") {
                return Err(JwtFailure::BadIssuer);
            }
            let aud = p.aud.as_deref().ok_or(JwtFailure::MissingAudience)?;
            let accepted = |a: &str| a == "api" || a == "mobile";
            let ok = match serde_json::from_str::<Value>(aud).unwrap() {
                Value::String(a) => accepted(&a),
                Value::Array(items) => {
                    let mut any = false;
                    for item in items {
                        match item {
                            Value::String(a) => any |= accepted(&a),
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
        let found = p
            .typ
            .as_deref()
            .or(p.type_.as_deref())
            .ok_or(JwtFailure::MissingTyp)?;
        if json_str(found).as_deref() != Some(expected) {
            return Err(JwtFailure::BadTyp);
        }
    }
    Ok(())
}

fn policy_verifier(policy: Policy, leeway: u64) -> Verifier {
    let mut o = opts(leeway);
    if let Policy::Strict = policy {
        o.issuer = Some("storefront".into());
        o.audience = Some(vec!["api".into(), "mobile".into()]);
    }
    Verifier::new(Algorithm::HS256, SECRET, o).unwrap()
}

/// Every way of damaging a token we try.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        byte: u8,
    },
    Truncate {
        keep: usize,
    },
    Delete {
        at: usize,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    /// Cut the signature segment down to `keep` characters.
    TruncateSignature {
        keep: usize,
    },
    /// Replace one segment by `text`.
    Segment {
        index: usize,
        text: String,
    },
    SwapSegments {
        a: usize,
        b: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop_oneof![
        Just(b'.'),
        Just(b'='),
        Just(b'+'),
        Just(b'/'),
        Just(b'A'),
        Just(b'_'),
        Just(b'-'),
        Just(0u8),
        Just(0xffu8),
        Just(b' '),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), special.clone()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        any::<usize>().prop_map(|at| Mutation::Delete { at }),
        (any::<usize>(), special).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (0usize..90).prop_map(|keep| Mutation::TruncateSignature { keep }),
        (
            0usize..3,
            prop_oneof![
                Just(String::new()),
                Just("e30".to_string()),                 // {}
                Just("eyJhbGciOiJub25lIn0".to_string()), // {"alg":"none"}
                "[A-Za-z0-9_-]{0,40}",
                "[A-Za-z0-9+/=_-]{0,40}",
                "\\PC{0,10}",
            ]
        )
            .prop_map(|(index, text)| Mutation::Segment { index, text }),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Mutation::SwapSegments { a, b }),
    ]
}

fn mutate(token: &str, m: &Mutation) -> Vec<u8> {
    let mut t = token.as_bytes().to_vec();
    let n = t.len();
    match m {
        Mutation::FlipBit { at, bit } => t[at % n] ^= 1 << bit,
        Mutation::SetByte { at, byte } => t[at % n] = *byte,
        Mutation::Truncate { keep } => t.truncate(keep % n),
        Mutation::Delete { at } => {
            t.remove(at % n);
        }
        Mutation::Insert { at, byte } => t.insert(at % (n + 1), *byte),
        Mutation::TruncateSignature { keep } => {
            let sig_start = token.rfind('.').unwrap() + 1;
            t.truncate(sig_start + keep.min(&(n - sig_start)));
        }
        Mutation::Segment { index, text } => {
            let mut parts: Vec<&str> = token.split('.').collect();
            parts[*index] = text;
            t = parts.join(".").into_bytes();
        }
        Mutation::SwapSegments { a, b } => {
            let mut parts: Vec<&str> = token.split('.').collect();
            parts.swap(*a, *b);
            t = parts.join(".").into_bytes();
        }
    }
    t
}

/// Extra claims for round trips (the registered ones are set separately).
fn extra_claims() -> impl Strategy<Value = Map<String, Value>> {
    vec(
        (
            any::<String>().prop_filter("unregistered", |n| !REGISTERED.contains(&n.as_str())),
            json_value(),
        ),
        0..8,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// The token of `claims`; `None` when `encode` refuses (with the reason
/// checked against the documented header rules).
fn encode_checked(
    alg: Algorithm,
    key: &SigningKey,
    header: Option<&Map<String, Value>>,
    claims: &Map<String, Value>,
) -> Option<String> {
    let json = serde_json::to_vec(claims).unwrap();
    let foreign_alg = header
        .and_then(|h| h.get("alg"))
        .is_some_and(|a| a.as_str() != Some(alg.name()));
    match jwt::encode(alg, key, header, &json) {
        Ok(token) => {
            assert!(!foreign_alg, "encode accepted a foreign alg: {header:?}");
            Some(token)
        }
        Err(e) => {
            assert!(foreign_alg, "encode refused ({e:?}) header {header:?}");
            assert_eq!(e, JwtFailure::BadHeaderParams);
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1))]

    /// Arbitrary bytes: refused, never a panic, whatever the clock or typ.
    #[test]
    fn arbitrary_bytes_are_refused(
        token in vec(any::<u8>(), 0..600),
        typ in proptest::option::of("\\PC{0,8}"),
        now in any::<i64>(),
    ) {
        prop_assert!(HS_VERIFIER.verify(&token, typ.as_deref(), now).is_err());
        prop_assert!(HS_VERIFIER.verify_payload(&token, typ.as_deref(), now).is_err());
        prop_assert!(ED.verifier.verify(&token, typ.as_deref(), now).is_err());
    }

    /// Strings shaped like tokens (base64url-ish segments, stray padding and
    /// characters, empty parts, too many or too few dots).
    #[test]
    fn token_shaped_strings_are_refused(
        segments in vec(
            prop_oneof![
                "[A-Za-z0-9_-]{0,60}",
                "[A-Za-z0-9+/=_-]{0,60}",
                "\\PC{0,20}",
                Just("eyJhbGciOiJIUzI1NiJ9".to_string()), // {"alg":"HS256"}
                Just("eyJleHAiOjk5OTk5OTk5OTl9".to_string()), // {"exp":9999999999}
            ],
            0..6,
        ),
        now in any::<i64>(),
    ) {
        let token = segments.join(".");
        let result = HS_VERIFIER.verify(token.as_bytes(), None, now);
        prop_assert!(result.is_err(), "accepted {token:?}");
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            prop_assert_eq!(result, Err(JwtFailure::Malformed));
        }
    }

    /// Correctly signed tokens with hostile headers and payloads: the outcome
    /// is exactly the one the documented rules give.
    #[test]
    fn signed_hostile_tokens_follow_the_rules(
        header in hostile_header(),
        payload in hostile_payload(),
        strict in any::<bool>(),
        leeway in prop_oneof![Just(0u64), 0u64..120, any::<u64>()],
        typ in proptest::option::weighted(0.3, prop_oneof![Just("access"), Just("refresh")]),
        now in prop_oneof![4 => Just(NOW), 1 => any::<i64>()],
    ) {
        let policy = if strict { Policy::Strict } else { Policy::Plain };
        let text = payload.text();
        let token = hs_forge(header.text.as_bytes(), text.as_bytes(), SECRET);
        let verifier = policy_verifier(policy, leeway);
        let got = verifier.verify(token.as_bytes(), typ, now);
        let want = header
            .expect
            .and_then(|()| expected_claims(&payload, policy, leeway, typ, now));
        match (&got, &want) {
            (Ok(claims), Ok(())) => {
                let parsed: Value = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(&Value::Object(claims.clone()), &parsed);
            }
            _ => prop_assert_eq!(got.map(|_| ()), want, "header {} payload {}", header.text, text),
        }
        // The entry point the pyo3 layer uses agrees.
        let raw = verifier.verify_payload(token.as_bytes(), typ, now);
        prop_assert_eq!(raw, want.map(|()| text.into_bytes()));
    }

    /// Signed payloads that are not a UTF-8 JSON object are refused.
    #[test]
    fn signed_garbage_payloads_are_bad(
        payload in prop_oneof![
            vec(any::<u8>(), 1..80),
            // Valid claims with one invalid UTF-8 byte inside a string.
            (any::<u8>().prop_filter("non-ascii", |b| *b >= 0x80)).prop_map(|b| {
                let mut p = br#"{"exp":9999999999,"sub":"x"#.to_vec();
                p.push(b);
                p.extend_from_slice(br#""}"#);
                p
            }),
            Just(b"[1,2]".to_vec()),
            Just(b"\"claims\"".to_vec()),
            Just(b"{\"exp\":9999999999} {}".to_vec()),
            Just(b"{\"exp\":9999999999,}".to_vec()),
            Just(b"{\"exp\":01}".to_vec()),
            Just(b"{\"exp\":9999999999,\"exp\":1}".to_vec()),
        ],
    ) {
        let token = hs_forge(br#"{"alg":"HS256"}"#, &payload, SECRET);
        let got = HS_VERIFIER.verify(token.as_bytes(), None, NOW);
        prop_assert!(got.is_err());
        let valid_object = std::str::from_utf8(&payload).is_ok()
            && matches!(serde_json::from_slice::<Value>(&payload), Ok(Value::Object(_)));
        if !valid_object {
            prop_assert_eq!(got, Err(JwtFailure::BadPayload));
        }
    }

    /// Deep nesting in header or payload: no stack overflow, no panic.
    #[test]
    fn deep_nesting_is_survived(depth in 0usize..5000, in_header in any::<bool>(), array in any::<bool>()) {
        let (open, close) = if array { ("[", "]") } else { ("{\"a\":", "}") };
        let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let (header, payload) = if in_header {
            (format!(r#"{{"alg":"HS256","x":{nested}}}"#), r#"{"exp":9999999999}"#.to_string())
        } else {
            (r#"{"alg":"HS256"}"#.to_string(), format!(r#"{{"exp":9999999999,"x":{nested}}}"#))
        };
        let token = hs_forge(header.as_bytes(), payload.as_bytes(), SECRET);
        let got = HS_VERIFIER.verify(token.as_bytes(), None, NOW);
        if depth < 100 {
            prop_assert!(got.is_ok(), "{got:?}");
        } else if got.is_err() {
            let want = if in_header { JwtFailure::BadHeader } else { JwtFailure::BadPayload };
            prop_assert_eq!(got.err(), Some(want));
        }
    }

    /// Any change to a valid token makes it invalid; truncated signatures
    /// included.
    #[test]
    fn mutated_tokens_are_refused(
        extra in extra_claims(),
        ed in any::<bool>(),
        mutation in mutation(),
    ) {
        let mut claims = extra;
        claims.insert("exp".into(), Value::from(NOW + 3600));
        let (alg, key, verifier) = if ed {
            (Algorithm::EdDSA, &ED.signing, &ED.verifier)
        } else {
            (Algorithm::HS256, &*HS_SIGNING, &*HS_VERIFIER)
        };
        let token = encode_checked(alg, key, None, &claims).unwrap();
        prop_assert!(verifier.verify(token.as_bytes(), None, NOW).is_ok());
        let damaged = mutate(&token, &mutation);
        if damaged != token.as_bytes() {
            let got = verifier.verify(&damaged, None, NOW);
            prop_assert!(got.is_err(), "{mutation:?} accepted: {:?}", String::from_utf8_lossy(&damaged));
        }
    }

    /// sign → verify gives the claims back (HS256 and EdDSA), with extra
    /// header members; a `crit` member is then refused, a foreign `alg`
    /// refused by `encode`.
    #[test]
    fn sign_verify_round_trip(
        extra in extra_claims(),
        ttl in 1i64..10_000_000,
        iat_ago in proptest::option::of(0i64..10_000_000),
        typ in proptest::option::of(prop_oneof![Just("access"), Just("refresh")]),
        header in proptest::option::of(
            vec(
                (
                    prop_oneof![
                        4 => "\\PC{0,8}",
                        1 => Just("typ".to_string()),
                        1 => Just("kid".to_string()),
                        1 => Just("crit".to_string()),
                        1 => Just("alg".to_string()),
                    ],
                    prop_oneof![
                        Just(Value::Null),
                        Just(Value::from("HS256")),
                        Just(Value::from("EdDSA")),
                        json_value(),
                    ],
                ),
                0..4,
            )
            .prop_map(|m| m.into_iter().collect::<Map<String, Value>>()),
        ),
        ed in any::<bool>(),
        through_cache in any::<bool>(),
    ) {
        let mut claims = extra;
        claims.insert("exp".into(), Value::from(NOW + ttl));
        if let Some(ago) = iat_ago {
            claims.insert("iat".into(), Value::from(NOW - ago));
            claims.insert("nbf".into(), Value::from(NOW - ago));
        }
        if let Some(t) = typ {
            claims.insert("typ".into(), Value::from(t));
        }
        let cached;
        let (alg, key, verifier) = match (ed, through_cache) {
            (true, false) => (Algorithm::EdDSA, &ED.signing, &ED.verifier),
            (false, false) => (Algorithm::HS256, &*HS_SIGNING, &*HS_VERIFIER),
            (true, true) => {
                cached = jwt::cached_signing_key(Algorithm::EdDSA, ED.private_pem.as_bytes()).unwrap();
                (Algorithm::EdDSA, &*cached, &ED.verifier)
            }
            (false, true) => {
                cached = jwt::cached_signing_key(Algorithm::HS256, SECRET).unwrap();
                (Algorithm::HS256, &*cached, &*HS_VERIFIER)
            }
        };
        let Some(token) = encode_checked(alg, key, header.as_ref(), &claims) else {
            return Ok(());
        };
        let got = verifier.verify(token.as_bytes(), typ, NOW);
        if header.as_ref().is_some_and(|h| h.contains_key("crit")) {
            prop_assert_eq!(got, Err(JwtFailure::CritUnsupported));
        } else {
            prop_assert_eq!(got, Ok(claims));
        }
    }

    /// Key material: arbitrary bytes, PEM blocks of arbitrary or damaged DER,
    /// DER with hostile lengths. Never a panic; a key that parses is usable.
    #[test]
    fn key_parsing_never_panics(
        alg in prop_oneof![Just(Algorithm::HS256), Just(Algorithm::RS256), Just(Algorithm::EdDSA)],
        tag in prop_oneof![
            Just("PUBLIC KEY"),
            Just("RSA PUBLIC KEY"),
            Just("PRIVATE KEY"),
            Just("RSA PRIVATE KEY"),
            Just("CERTIFICATE"),
        ],
        body in prop_oneof![
            vec(any::<u8>(), 0..200),
            (vec(any::<u8>(), 0..4), any::<usize>(), any::<u8>()).prop_map(|(prefix, at, byte)| {
                // A valid Ed25519 SPKI or PKCS#8, damaged in one byte, with
                // a hostile prefix (long-form lengths, indefinite lengths).
                let mut der = if at % 2 == 0 { ed25519_spki(&[9; 32]) } else { ed25519_pkcs8([3; 32]) };
                let n = der.len();
                der[at % n] = byte;
                [prefix, der].concat()
            }),
            prop_oneof![
                Just(vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
                Just(vec![0x30, 0x80, 0x00, 0x00]),
                Just(vec![0x30, 0x85, 0x01, 0, 0, 0, 0, 0]),
                Just(vec![0x30, 0x00]),
                Just(vec![0x30, 0x04, 0x02, 0x00, 0x02, 0x00]),
            ],
        ],
        raw in any::<bool>(),
    ) {
        let bytes = if raw { body.clone() } else { pem::encode(&pem::Pem::new(tag, body)).into_bytes() };
        let options = opts(0);
        if let Ok(v) = Verifier::new(alg, &bytes, options) {
            let token = hs_forge(format!(r#"{{"alg":"{}"}}"#, alg.name()).as_bytes(), b"{\"exp\":9999999999}", SECRET);
            let _ = v.verify(token.as_bytes(), None, NOW);
        }
        if let Ok(k) = SigningKey::from_bytes(alg, &bytes) {
            let _ = jwt::encode(alg, &k, None, b"{}");
        }
        let _ = jwt::cached_signing_key(alg, &bytes);
    }

    /// A structurally valid RSA public key with an arbitrary modulus and
    /// exponent: accepted by `Verifier::new` (only the size is checked
    /// there), and then every signature check fails cleanly in `ring`.
    #[test]
    fn rsa_garbage_public_keys_fail_cleanly(
        modulus in vec(any::<u8>(), 256..=260),
        exponent in vec(any::<u8>(), 0..9),
        sig in vec(any::<u8>(), 1..300),
    ) {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.extend_from_slice(&[0x82, (body.len() >> 8) as u8, body.len() as u8]);
            }
            out.extend_from_slice(body);
            out
        }
        let mut n = modulus;
        n[0] |= 0x80;
        let der = tlv(0x30, &[tlv(0x02, &n), tlv(0x02, &exponent)].concat());
        let pem_text = pem::encode(&pem::Pem::new("RSA PUBLIC KEY", der));
        match Verifier::new(Algorithm::RS256, pem_text.as_bytes(), opts(0)) {
            Ok(v) => {
                let head = format!("{}.{}", b64(br#"{"alg":"RS256"}"#), b64(b"{\"exp\":9999999999}"));
                let token = format!("{head}.{}", b64(&sig));
                prop_assert_eq!(v.verify(token.as_bytes(), None, NOW).err(), Some(JwtFailure::BadSignature));
            }
            Err(e) => prop_assert_eq!(e, JwtFailure::InvalidKey),
        }
    }

    /// Algorithm names and verifier settings from outside.
    #[test]
    fn algorithm_names_and_settings(name in "\\PC{0,8}", max_bytes in any::<usize>(), leeway in any::<u64>()) {
        match Algorithm::from_name(&name) {
            Ok(a) => prop_assert_eq!(a.name(), name),
            Err(e) => prop_assert_eq!(e, JwtFailure::UnsupportedAlgorithm),
        }
        let v = Verifier::new(Algorithm::HS256, SECRET, VerifyOptions { max_bytes, leeway, ..Default::default() });
        prop_assert_eq!(v.is_err(), max_bytes == 0);
    }
}

// ---------------------------------------------------------------------------
// The seed corpus
// ---------------------------------------------------------------------------

/// The outcome recorded in a corpus file name (`<name>.<outcome>`): `ok`, or
/// the refusal reason with `_` for spaces (`bad_signature`).
fn outcome(result: &Result<Vec<u8>, JwtFailure>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.reason().replace(' ', "_"),
    }
}

/// Every file of `fuzz/corpus/jwt/` is a token (exact bytes), verified with
/// HS256 and [`CORPUS_SECRET`] at [`NOW`] (no leeway, issuer or audience,
/// `max_bytes` 8192); the outcome must be the one in its name.
#[test]
fn corpus_jwt() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/jwt");
    let options = VerifyOptions {
        max_bytes: 8192,
        ..Default::default()
    };
    let verifier = Verifier::new(Algorithm::HS256, CORPUS_SECRET, options).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 20, "corpus too small: {}", entries.len());
    let mut failures = Vec::new();
    for path in &entries {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (_, want) = name.rsplit_once('.').expect("name.outcome");
        let token = std::fs::read(path).unwrap();
        let got = catch_unwind(AssertUnwindSafe(|| {
            let _ = verifier.verify(&token, None, NOW);
            let _ = ED.verifier.verify(&token, Some("access"), NOW);
            outcome(&verifier.verify_payload(&token, None, NOW))
        }));
        match got {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{name}: got {got}")),
            Err(_) => failures.push(format!("{name}: PANIC")),
        }
    }
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}

/// The Ed25519 fixtures the properties rely on: the public and the private
/// PEM both verify what the private key signs.
#[test]
fn ed25519_fixture_round_trip() {
    let token = jwt::encode(Algorithm::EdDSA, &ED.signing, None, b"{\"exp\":9999999999}").unwrap();
    assert!(ED.verifier.verify(token.as_bytes(), None, NOW).is_ok());
    let from_private = Verifier::new(Algorithm::EdDSA, ED.private_pem.as_bytes(), opts(0)).unwrap();
    assert!(from_private.verify(token.as_bytes(), None, NOW).is_ok());
    assert!(ED.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
}
