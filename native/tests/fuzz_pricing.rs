//! Fuzzing the pricing entry point the pyo3 layer calls (`pricing::price_cart`,
//! `Promotion::new`), with proptest on stable Rust.
//!
//! * any input at all (negative, zero and extreme prices and quantities, any
//!   promotion numbers, any tax rate, any currency string): never a panic;
//!   an error is `Overflow`, `Invalid` or `UnknownCurrency`;
//! * every priced cart keeps the invariants of the module docs (subtotals are
//!   the exact products, 0 <= line discount <= line subtotal, the sums, the
//!   half-even tax, the total) and an overflow is reported exactly when an
//!   exact (i128) computation leaves i64;
//! * carts of shop-sized numbers are always priced, and each promotion kind
//!   gives what an independent model of its rule gives;
//! * the seed corpus in `fuzz/corpus/pricing/` (hand-computed expectations)
//!   runs every time.
//!
//! The Python reference agreement is tests/native/test_pricing.py; this file
//! is the volume run (`make fuzz` sets PROPTEST_CASES).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::Value;
use storefront_native::errors::PricingFailure;
use storefront_native::pricing::{
    price_cart, Line, PricedCart, Promotion, PromotionKind, CURRENCIES, MAX_TAX_RATE_BPS,
};

fn config() -> Config {
    let mut config = Config::default(); // reads PROPTEST_CASES
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/proptest-regressions/fuzz_pricing.txt"
    ))));
    config
}

/// Integers that find edges: extremes, small numbers, powers of ten, anything.
fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => any::<i64>(),
        3 => -3i64..1000,
        1 => prop::sample::select(vec![
            i64::MIN, i64::MIN + 1, -1, 0, 1, 99, 100, 101, 9_999, 10_000,
            i64::MAX / 100, i64::MAX / 2, i64::MAX - 1, i64::MAX,
            (1i64 << 31) - 1, 1i64 << 31, 1i64 << 32, 3_037_000_499, 3_037_000_500,
        ]),
        2 => (0u32..19).prop_map(|e| 10i64.pow(e)),
    ]
}

fn kind() -> impl Strategy<Value = PromotionKind> {
    prop_oneof![
        Just(PromotionKind::Percent),
        Just(PromotionKind::Fixed),
        Just(PromotionKind::BuyXGetY)
    ]
}

fn any_line() -> impl Strategy<Value = Line> {
    (0i64..8, prop::option::of(0i64..4), edgy_i64(), edgy_i64()).prop_map(
        |(product_id, category_id, unit_price, quantity)| Line {
            product_id,
            category_id,
            unit_price,
            quantity,
        },
    )
}

type RawPromotion = (PromotionKind, i64, i64, i64, i64, Vec<i64>, Vec<i64>);

fn any_promotion() -> impl Strategy<Value = RawPromotion> {
    (
        kind(),
        edgy_i64(),
        edgy_i64(),
        edgy_i64(),
        edgy_i64(),
        vec(0i64..8, 0..3),
        vec(0i64..4, 0..2),
    )
}

fn any_currency() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(CURRENCIES.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>()),
        1 => "\\PC{0,5}",
        1 => "[A-Z]{3}",
    ]
}

fn half_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    if 2 * r > d || (2 * r == d && q % 2 != 0) {
        q + 1
    } else {
        q
    }
}

/// The invariants every priced cart keeps, checked in i128.
fn check_invariants(lines: &[Line], promotion: Option<&Promotion>, bps: i64, cart: &PricedCart) {
    assert_eq!(cart.lines.len(), lines.len());
    let mut subtotal = 0i128;
    let mut discount = 0i128;
    for (line, priced) in lines.iter().zip(&cart.lines) {
        let exact = i128::from(line.unit_price) * i128::from(line.quantity);
        assert_eq!(i128::from(priced.line_subtotal), exact);
        assert!(0 <= priced.line_discount && priced.line_discount <= priced.line_subtotal);
        assert_eq!(
            priced.line_total,
            priced.line_subtotal - priced.line_discount
        );
        assert_eq!(priced.product_id, line.product_id);
        subtotal += exact;
        discount += i128::from(priced.line_discount);
    }
    assert_eq!(i128::from(cart.subtotal), subtotal);
    assert_eq!(i128::from(cart.discount), discount);
    let taxable = subtotal - discount;
    assert_eq!(
        i128::from(cart.tax),
        half_even(taxable * i128::from(bps), 10_000)
    );
    assert_eq!(i128::from(cart.total), taxable + i128::from(cart.tax));
    assert_eq!(cart.promotion_applied, promotion.is_some() && discount > 0);
    if let Some(p) = promotion {
        if subtotal < i128::from(p.min_subtotal) {
            assert_eq!(discount, 0, "below min_subtotal nothing comes off");
        }
    }
}

/// Whether an exact computation of the cart (valid inputs, this discount)
/// leaves i64 somewhere: a line subtotal, the subtotal, the tax or the total.
fn overflows(lines: &[Line], bps: i64, discount: i128) -> bool {
    let fits = |v: i128| i64::try_from(v).is_ok();
    let mut subtotal = 0i128;
    for line in lines {
        if line.unit_price < 0 || line.quantity < 1 {
            return false; // refused as invalid first
        }
        let ls = i128::from(line.unit_price) * i128::from(line.quantity);
        subtotal += ls;
        if !fits(ls) || !fits(subtotal) {
            return true;
        }
    }
    let taxable = subtotal - discount;
    let tax = half_even(taxable * i128::from(bps), 10_000);
    !fits(tax) || !fits(taxable + tax)
}

proptest! {
    #![proptest_config(config())]

    /// Anything in, never a panic; and a priced cart always keeps the rules.
    #[test]
    fn any_input_is_priced_or_refused(
        lines in vec(any_line(), 0..12),
        raw in prop::option::of(any_promotion()),
        bps in edgy_i64(),
        currency in any_currency(),
    ) {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let promotion = match raw.clone() {
                Some((k, v, b, g, m, p, c)) => match Promotion::new(k, v, b, g, m, p, c) {
                    Ok(p) => Some(p),
                    Err(e) => return (None, Err(e)),
                },
                None => None,
            };
            let result = price_cart(&lines, promotion.as_ref(), bps, &currency);
            (promotion, result)
        }));
        let (promotion, result) = outcome.map_err(|_| TestCaseError::fail("panic"))?;
        match result {
            Ok(cart) => check_invariants(&lines, promotion.as_ref(), bps, &cart),
            Err(PricingFailure::Overflow) => {
                // Lines are read in order, so the lines before the overflow are valid, and
                // something really leaves i64. The tax and total grow with the taxable amount,
                // largest with no discount: if that fits, everything fits.
                prop_assert!((0..=MAX_TAX_RATE_BPS).contains(&bps));
                prop_assert!(overflows(&lines, bps, 0));
            }
            Err(PricingFailure::Invalid(message)) => prop_assert!(!message.is_empty()),
            Err(PricingFailure::UnknownCurrency(_)) => {
                prop_assert!(!CURRENCIES.iter().any(|(c, _)| *c == currency));
            }
        }
    }

    /// Shop-sized carts are always priced, and each kind gives what its rule says.
    #[test]
    fn shop_sized_carts_follow_each_rule(
        raw_lines in vec((0i64..6, prop::option::of(0i64..3), 0i64..1_000_000, 1i64..1000), 1..15),
        kind in kind(),
        value in 1i64..200_000,
        buy in 1i64..5,
        get in 1i64..5,
        min_subtotal in 0i64..500_000,
        product_ids in vec(0i64..6, 0..3),
        category_ids in vec(0i64..3, 0..2),
        bps in 0i64..3_000,
    ) {
        let lines: Vec<Line> = raw_lines
            .iter()
            .map(|&(product_id, category_id, unit_price, quantity)| Line {
                product_id, category_id, unit_price, quantity,
            })
            .collect();
        let value = if kind == PromotionKind::Percent { value % 100 + 1 } else { value };
        let promotion = Promotion::new(
            kind, value, buy, get, min_subtotal, product_ids, category_ids,
        ).expect("valid promotion");
        let cart = price_cart(&lines, Some(&promotion), bps, "USD").expect("shop-sized cart");
        check_invariants(&lines, Some(&promotion), bps, &cart);
        if cart.subtotal < min_subtotal {
            return Ok(());
        }
        let scope: Vec<bool> = lines.iter().map(|l| promotion.in_scope(l)).collect();
        let in_scope: i64 = cart.lines.iter().zip(&scope).filter(|(_, &s)| s)
            .map(|(p, _)| p.line_subtotal).sum();
        for ((line, priced), &s) in lines.iter().zip(&cart.lines).zip(&scope) {
            let expected = match (s, kind) {
                (false, _) => Some(0),
                (true, PromotionKind::Percent) => Some(
                    half_even(i128::from(priced.line_subtotal) * i128::from(value), 100) as i64,
                ),
                (true, PromotionKind::BuyXGetY) => {
                    Some(line.quantity / (buy + get) * get * line.unit_price)
                }
                (true, PromotionKind::Fixed) => None, // checked as a sum below
            };
            if let Some(expected) = expected {
                prop_assert_eq!(priced.line_discount, expected);
            }
        }
        if kind == PromotionKind::Fixed {
            prop_assert_eq!(cart.discount, value.min(in_scope));
        }
    }
}

// ---------------------------------------------------------------------------
// The seed corpus
// ---------------------------------------------------------------------------

fn int(v: &Value) -> i64 {
    v.as_i64().expect("an integer")
}

fn ints(v: Option<&Value>) -> Vec<i64> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(int).collect())
        .unwrap_or_default()
}

/// Runs one corpus case; `Err` describes a mismatch.
fn run_case(case: &Value) -> Result<(), String> {
    let lines: Vec<Line> = case["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| Line {
            product_id: int(&l["product_id"]),
            category_id: l.get("category_id").and_then(Value::as_i64),
            unit_price: int(&l["unit_price"]),
            quantity: int(&l["quantity"]),
        })
        .collect();
    let promotion = match case.get("promotion") {
        Some(p) if !p.is_null() => {
            let kind = PromotionKind::from_name(p["kind"].as_str().expect("kind"))
                .map_err(|e| e.to_string())?;
            let field = |name: &str| p.get(name).map(int).unwrap_or(0);
            match Promotion::new(
                kind,
                field("value"),
                field("buy_quantity"),
                field("get_quantity"),
                field("min_subtotal"),
                ints(p.get("product_ids")),
                ints(p.get("category_ids")),
            ) {
                Ok(p) => Some(p),
                Err(e) => return compare_error(case, &e),
            }
        }
        _ => None,
    };
    let bps = case.get("tax_rate_bps").map(int).unwrap_or(0);
    let currency = case
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or("USD");
    match price_cart(&lines, promotion.as_ref(), bps, currency) {
        Err(e) => compare_error(case, &e),
        Ok(cart) => {
            check_invariants(&lines, promotion.as_ref(), bps, &cart);
            let want = &case["expect"];
            if let Some(error) = want.get("error") {
                return Err(format!("priced, but expected error {error}"));
            }
            let got = serde_json::json!({
                "subtotal": cart.subtotal,
                "discount": cart.discount,
                "tax": cart.tax,
                "total": cart.total,
                "line_discounts": cart.lines.iter().map(|l| l.line_discount).collect::<Vec<_>>(),
            });
            for (name, value) in want.as_object().expect("expect") {
                if got.get(name) != Some(value) {
                    return Err(format!("{name}: got {}, want {value}", got[name]));
                }
            }
            Ok(())
        }
    }
}

fn compare_error(case: &Value, error: &PricingFailure) -> Result<(), String> {
    let kind = match error {
        PricingFailure::Overflow => "overflow",
        PricingFailure::Invalid(_) => "invalid",
        PricingFailure::UnknownCurrency(_) => "unknown currency",
    };
    match case["expect"].get("error").and_then(Value::as_str) {
        Some(want) if want == kind => Ok(()),
        want => Err(format!("error {kind} ({error}), want {want:?}")),
    }
}

/// Every `fuzz/corpus/pricing/*.json` is `{lines, promotion?, tax_rate_bps?,
/// currency?, expect}`; `expect` holds the totals (and `line_discounts`) or
/// `{"error": "overflow" | "invalid" | "unknown currency"}`.
#[test]
fn corpus_pricing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pricing");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    assert!(entries.len() >= 15, "corpus too small: {}", entries.len());
    let mut failures = Vec::new();
    for path in &entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let case: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        match catch_unwind(AssertUnwindSafe(|| run_case(&case))) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{name}: {why}")),
            Err(_) => failures.push(format!("{name}: PANIC")),
        }
    }
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}
