//! Cart pricing in integer minor units.
//!
//! Pure Rust; the executable specification is
//! `tests/native/reference_pricing.py`, and the property tests check that the
//! two agree. All arithmetic is checked (in i64 where a product fits, i128
//! intermediates where it may not, checked conversion back to i64): an
//! overflow is an error, never a wrap.
//!
//! Rules, in order:
//! 1. `line_subtotal = unit_price * quantity`; `subtotal = Σ line_subtotal`.
//! 2. A promotion applies only when `subtotal >= min_subtotal`.
//! 3. A line is in scope when the promotion names neither products nor
//!    categories, or its product id / category id is named.
//! 4. `percent`: each in-scope line gets `round_half_even(ls * value / 100)`.
//!    `fixed`: `min(value, in-scope subtotal)` is spread in proportion to
//!    `ls` (floor of each share); the remainder goes to the largest in-scope
//!    line (first in input order on ties) — and, if that line has no room
//!    left for all of it (possible only when many tiny lines round down),
//!    the rest goes on to the next largest line, and so on.
//!    `buy_x_get_y`: `free = (quantity / (buy + get)) * get` units of each
//!    in-scope line are free.
//! 5. `tax = round_half_even((subtotal - discount) * tax_rate_bps / 10000)`.
//! 6. `total = subtotal - discount + tax`.

use crate::errors::PricingFailure;

type Result<T> = std::result::Result<T, PricingFailure>;

/// Largest accepted tax rate: 1000 % in basis points.
pub const MAX_TAX_RATE_BPS: i64 = 100_000;

/// ISO 4217 currencies accepted, with their minor-unit exponent.
pub const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("GNF", 0),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("RWF", 0),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("ZAR", 2),
];

/// Minor-unit exponent of `code`, which must be three upper-case ASCII
/// letters and in [`CURRENCIES`].
pub fn currency_exponent(code: &str) -> Result<(&'static str, u32)> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        if let Ok(i) = CURRENCIES.binary_search_by(|(c, _)| (*c).cmp(code)) {
            return Ok(CURRENCIES[i]);
        }
    }
    Err(PricingFailure::UnknownCurrency(code.to_string()))
}

/// Round the non-negative rational `n / d` half to even.
pub fn round_half_even(n: i128, d: i128) -> i128 {
    debug_assert!(n >= 0 && d > 0);
    let q = n / d;
    let r = n % d;
    if 2 * r > d || (2 * r == d && q % 2 == 1) {
        q + 1
    } else {
        q
    }
}

/// `round_half_even(a * b, d)` for non-negative `a`, `b` and a positive `d`,
/// in i64 when `a * b` fits (the common case: no 128-bit division), in i128
/// otherwise; an error only when the result does not fit in i64.
fn scale_half_even(a: i64, b: i64, d: i64) -> Result<i64> {
    match a.checked_mul(b) {
        Some(n) => {
            let (q, r) = (n / d, n % d);
            // 2 * r cannot overflow: r < d <= i64::MAX / 2 for every d used here.
            Ok(if 2 * r > d || (2 * r == d && q % 2 == 1) {
                q + 1
            } else {
                q
            })
        }
        None => to_i64(round_half_even(
            i128::from(a) * i128::from(b),
            i128::from(d),
        )),
    }
}

fn to_i64(v: i128) -> Result<i64> {
    i64::try_from(v).map_err(|_| PricingFailure::Overflow)
}

fn invalid(msg: impl Into<String>) -> PricingFailure {
    PricingFailure::Invalid(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product_id: i64,
    pub category_id: Option<i64>,
    /// Minor units, >= 0.
    pub unit_price: i64,
    /// >= 1.
    pub quantity: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionKind {
    Percent,
    Fixed,
    BuyXGetY,
}

impl PromotionKind {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "percent" => Ok(PromotionKind::Percent),
            "fixed" => Ok(PromotionKind::Fixed),
            "buy_x_get_y" => Ok(PromotionKind::BuyXGetY),
            other => Err(invalid(format!(
                "promotion.kind must be 'percent', 'fixed' or 'buy_x_get_y', not {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub kind: PromotionKind,
    /// percent: 1..=100; fixed: minor units >= 1; unused by buy_x_get_y.
    pub value: i64,
    pub buy_quantity: i64,
    pub get_quantity: i64,
    pub min_subtotal: i64,
    pub product_ids: Vec<i64>,
    pub category_ids: Vec<i64>,
}

impl Promotion {
    /// Validate and normalise (scope lists sorted for binary search).
    pub fn new(
        kind: PromotionKind,
        value: i64,
        buy_quantity: i64,
        get_quantity: i64,
        min_subtotal: i64,
        mut product_ids: Vec<i64>,
        mut category_ids: Vec<i64>,
    ) -> Result<Self> {
        match kind {
            PromotionKind::Percent if !(1..=100).contains(&value) => {
                return Err(invalid("promotion.value must be 1..=100 for 'percent'"))
            }
            PromotionKind::Fixed if value < 1 => {
                return Err(invalid("promotion.value must be >= 1 for 'fixed'"))
            }
            PromotionKind::BuyXGetY if buy_quantity < 1 || get_quantity < 1 => {
                return Err(invalid(
                    "promotion.buy_quantity and promotion.get_quantity must be >= 1",
                ))
            }
            _ => {}
        }
        if min_subtotal < 0 {
            return Err(invalid("promotion.min_subtotal must be >= 0"));
        }
        product_ids.sort_unstable();
        product_ids.dedup();
        category_ids.sort_unstable();
        category_ids.dedup();
        Ok(Promotion {
            kind,
            value,
            buy_quantity,
            get_quantity,
            min_subtotal,
            product_ids,
            category_ids,
        })
    }

    pub fn in_scope(&self, line: &Line) -> bool {
        (self.product_ids.is_empty() && self.category_ids.is_empty())
            || self.product_ids.binary_search(&line.product_id).is_ok()
            || line
                .category_id
                .is_some_and(|c| self.category_ids.binary_search(&c).is_ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: i64,
    pub line_subtotal: i64,
    pub line_discount: i64,
    pub line_total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCart {
    pub lines: Vec<PricedLine>,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    /// A promotion was given, `min_subtotal` was met and it took something off.
    pub promotion_applied: bool,
    pub currency: &'static str,
    pub exponent: u32,
}

fn validate_line(i: usize, line: &Line) -> Result<()> {
    if line.unit_price < 0 {
        return Err(invalid(format!("lines[{i}].unit_price must be >= 0")));
    }
    if line.quantity < 1 {
        return Err(invalid(format!("lines[{i}].quantity must be >= 1")));
    }
    Ok(())
}

/// Spread a fixed amount over the in-scope lines (see the module docs).
/// Every sum here is at most the cart subtotal, which fits in i64; only the
/// product `amount * line subtotal` may need 128 bits.
fn spread_fixed(value: i64, subtotals: &[i64], scope: &[bool], out: &mut [i64]) -> Result<()> {
    let mut scope_total: i64 = 0;
    for (&ls, _) in subtotals.iter().zip(scope).filter(|(_, &s)| s) {
        scope_total = scope_total
            .checked_add(ls)
            .ok_or(PricingFailure::Overflow)?;
    }
    if scope_total == 0 {
        return Ok(());
    }
    let amount = value.min(scope_total);
    let mut given: i64 = 0;
    for ((&ls, &s), d) in subtotals.iter().zip(scope).zip(out.iter_mut()) {
        if s {
            // share <= ls, since amount <= scope_total.
            *d = match amount.checked_mul(ls) {
                Some(n) => n / scope_total,
                None => to_i64(i128::from(amount) * i128::from(ls) / i128::from(scope_total))?,
            };
            given += *d;
        }
    }
    let mut remainder = amount - given;
    if remainder == 0 {
        return Ok(());
    }
    // Largest in-scope line first, input order on ties. Almost always that
    // line has room for the whole remainder (less than one unit per in-scope
    // line): find it with one scan and skip the sort.
    let largest = (0..subtotals.len())
        .filter(|&i| scope[i])
        .reduce(|best, i| {
            if subtotals[i] > subtotals[best] {
                i
            } else {
                best
            }
        });
    if let Some(i) = largest.filter(|&i| subtotals[i] - out[i] >= remainder) {
        out[i] += remainder;
        return Ok(());
    }
    let mut order: Vec<usize> = (0..subtotals.len()).filter(|&i| scope[i]).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(subtotals[i]), i));
    for i in order {
        let take = (subtotals[i] - out[i]).min(remainder);
        out[i] += take;
        remainder -= take;
        if remainder == 0 {
            break;
        }
    }
    debug_assert_eq!(remainder, 0);
    Ok(())
}

/// Price a cart. See the module documentation for the rules.
pub fn price_cart(
    lines: &[Line],
    promotion: Option<&Promotion>,
    tax_rate_bps: i64,
    currency: &str,
) -> Result<PricedCart> {
    let (currency, exponent) = currency_exponent(currency)?;
    if !(0..=MAX_TAX_RATE_BPS).contains(&tax_rate_bps) {
        return Err(invalid(format!(
            "tax_rate_bps must be 0..={MAX_TAX_RATE_BPS}"
        )));
    }

    let mut subtotals = Vec::with_capacity(lines.len());
    let mut subtotal: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        validate_line(i, line)?;
        // Both factors are non-negative: the product fits iff checked_mul succeeds.
        let ls = line
            .unit_price
            .checked_mul(line.quantity)
            .ok_or(PricingFailure::Overflow)?;
        subtotal = subtotal.checked_add(ls).ok_or(PricingFailure::Overflow)?;
        subtotals.push(ls);
    }

    let mut discounts = vec![0i64; lines.len()];
    if let Some(promo) = promotion.filter(|p| subtotal >= p.min_subtotal) {
        let scope: Vec<bool> = lines.iter().map(|l| promo.in_scope(l)).collect();
        match promo.kind {
            PromotionKind::Percent => {
                for ((&ls, &s), d) in subtotals.iter().zip(&scope).zip(discounts.iter_mut()) {
                    if s {
                        *d = scale_half_even(ls, promo.value, 100)?;
                    }
                }
            }
            PromotionKind::Fixed => spread_fixed(promo.value, &subtotals, &scope, &mut discounts)?,
            PromotionKind::BuyXGetY => {
                // A group beyond i64 is larger than any quantity: nothing free.
                let group = promo.buy_quantity.checked_add(promo.get_quantity);
                for ((line, &s), d) in lines.iter().zip(&scope).zip(discounts.iter_mut()) {
                    if let (true, Some(group)) = (s, group) {
                        // free <= quantity, so free * unit_price <= line subtotal: no overflow.
                        let free = line.quantity / group * promo.get_quantity;
                        *d = free * line.unit_price;
                    }
                }
            }
        }
    }

    let mut discount: i64 = 0;
    let mut priced = Vec::with_capacity(lines.len());
    for ((line, &ls), &d) in lines.iter().zip(&subtotals).zip(&discounts) {
        debug_assert!((0..=ls).contains(&d));
        discount = discount.checked_add(d).ok_or(PricingFailure::Overflow)?;
        priced.push(PricedLine {
            product_id: line.product_id,
            line_subtotal: ls,
            line_discount: d,
            line_total: ls - d,
        });
    }
    let taxable = subtotal - discount;
    let tax = scale_half_even(taxable, tax_rate_bps, 10_000)?;
    let total = taxable.checked_add(tax).ok_or(PricingFailure::Overflow)?;
    Ok(PricedCart {
        lines: priced,
        subtotal,
        discount,
        tax,
        total,
        promotion_applied: promotion.is_some() && discount > 0,
        currency,
        exponent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: i64, category_id: Option<i64>, unit_price: i64, quantity: i64) -> Line {
        Line {
            product_id,
            category_id,
            unit_price,
            quantity,
        }
    }

    fn promo(kind: PromotionKind, value: i64) -> Promotion {
        Promotion::new(kind, value, 0, 0, 0, vec![], vec![]).unwrap()
    }

    fn discounts(cart: &PricedCart) -> Vec<i64> {
        cart.lines.iter().map(|l| l.line_discount).collect()
    }

    #[test]
    fn half_even() {
        assert_eq!(round_half_even(5, 10), 0);
        assert_eq!(round_half_even(15, 10), 2);
        assert_eq!(round_half_even(25, 10), 2);
        assert_eq!(round_half_even(26, 10), 3);
        assert_eq!(round_half_even(24, 10), 2);
        assert_eq!(round_half_even(0, 7), 0);
    }

    #[test]
    fn scale_half_even_agrees_across_the_i64_and_i128_paths() {
        // Small products take the i64 path, huge ones the i128 path; both
        // must equal the 128-bit definition.
        let cases = [
            (0, 15, 100),
            (1, 50, 100),
            (3, 50, 100),
            (12_345, 825, 10_000),
            (i64::MAX / 100, 100, 100),
            (i64::MAX, 100, 100),
            (i64::MAX, 99, 100),
            (i64::MAX / 3, 100_000, 10_000),
        ];
        for (a, b, d) in cases {
            let wide = round_half_even(i128::from(a) * i128::from(b), i128::from(d));
            assert_eq!(
                scale_half_even(a, b, d).ok(),
                i64::try_from(wide).ok(),
                "{a} * {b} / {d}"
            );
        }
        assert_eq!(
            scale_half_even(i64::MAX, 100_000, 10_000),
            Err(PricingFailure::Overflow)
        );
    }

    #[test]
    fn fixed_spread_of_huge_amounts_uses_wide_products() {
        // amount * line subtotal overflows i64; the shares are still exact.
        let half = i64::MAX / 2;
        let mut out = [0; 2];
        spread_fixed(i64::MAX, &[half, half], &[true, true], &mut out).unwrap();
        assert_eq!(out, [half, half]);
        let mut out = [0; 2];
        spread_fixed(half, &[half, half - 1], &[true, true], &mut out).unwrap();
        assert_eq!(out.iter().sum::<i64>(), half);
        assert!(out[0] <= half && out[1] < half);
    }

    #[test]
    fn currencies() {
        assert_eq!(currency_exponent("USD").unwrap(), ("USD", 2));
        assert_eq!(currency_exponent("JPY").unwrap().1, 0);
        assert_eq!(currency_exponent("KWD").unwrap().1, 3);
        for bad in ["usd", "US", "USDX", "XXX", ""] {
            assert!(matches!(
                currency_exponent(bad),
                Err(PricingFailure::UnknownCurrency(_))
            ));
        }
        let mut sorted = CURRENCIES.to_vec();
        sorted.sort();
        assert_eq!(sorted, CURRENCIES, "table must stay sorted");
    }

    #[test]
    fn no_promotion_with_tax() {
        let cart = price_cart(
            &[line(1, Some(1), 1999, 3), line(2, None, 500, 1)],
            None,
            825,
            "USD",
        )
        .unwrap();
        assert_eq!(cart.subtotal, 6497);
        assert_eq!(cart.discount, 0);
        // 6497 * 0.0825 = 536.0025 -> 536
        assert_eq!(cart.tax, 536);
        assert_eq!(cart.total, 7033);
        assert!(!cart.promotion_applied);
    }

    #[test]
    fn percent_rounds_half_even() {
        // 10% of 25 = 2.5 -> 2; 10% of 35 = 3.5 -> 4.
        let cart = price_cart(
            &[line(1, None, 25, 1), line(2, None, 35, 1)],
            Some(&promo(PromotionKind::Percent, 10)),
            0,
            "EUR",
        )
        .unwrap();
        assert_eq!(discounts(&cart), vec![2, 4]);
        assert_eq!(cart.total, 54);
        assert!(cart.promotion_applied);
    }

    #[test]
    fn fixed_spread_and_remainder() {
        // 100 off 300 + 600 + 100: exact shares 30, 60, 10.
        let lines = [
            line(1, None, 300, 1),
            line(2, None, 600, 1),
            line(3, None, 100, 1),
        ];
        let cart = price_cart(&lines, Some(&promo(PromotionKind::Fixed, 100)), 0, "USD").unwrap();
        assert_eq!(discounts(&cart), vec![30, 60, 10]);
        // 7 off 5 + 3 + 2: floor shares 3, 2, 1; the remainder 1 goes to the
        // largest line.
        let lines = [
            line(1, None, 5, 1),
            line(2, None, 3, 1),
            line(3, None, 2, 1),
        ];
        let cart = price_cart(&lines, Some(&promo(PromotionKind::Fixed, 7)), 0, "USD").unwrap();
        assert_eq!(discounts(&cart), vec![4, 2, 1]);
        // Ties: the first of the largest lines.
        let lines = [
            line(1, None, 1, 1),
            line(2, None, 3, 1),
            line(3, None, 3, 1),
        ];
        let cart = price_cart(&lines, Some(&promo(PromotionKind::Fixed, 5)), 0, "USD").unwrap();
        // shares floor(5/7)=0, floor(15/7)=2, 2; remainder 1 -> line 2.
        assert_eq!(discounts(&cart), vec![0, 3, 2]);
        // Capped at the in-scope subtotal.
        let cart = price_cart(&lines, Some(&promo(PromotionKind::Fixed, 50)), 0, "USD").unwrap();
        assert_eq!(discounts(&cart), vec![1, 3, 3]);
        assert_eq!(cart.total, 0);
    }

    #[test]
    fn fixed_remainder_overflowing_largest_line_moves_on() {
        // 2 off three lines of 1: shares 0, remainder 2; the first line can
        // only take 1, the second takes the other.
        let lines = [
            line(1, None, 1, 1),
            line(2, None, 1, 1),
            line(3, None, 1, 1),
        ];
        let cart = price_cart(&lines, Some(&promo(PromotionKind::Fixed, 2)), 0, "USD").unwrap();
        assert_eq!(discounts(&cart), vec![1, 1, 0]);
    }

    #[test]
    fn buy_x_get_y() {
        let p = Promotion::new(PromotionKind::BuyXGetY, 0, 2, 1, 0, vec![7], vec![]).unwrap();
        let lines = [line(7, None, 100, 7), line(8, None, 100, 7)];
        let cart = price_cart(&lines, Some(&p), 0, "JPY").unwrap();
        // 7 units, groups of 3 -> 2 groups -> 2 free.
        assert_eq!(discounts(&cart), vec![200, 0]);
        assert_eq!(cart.exponent, 0);
    }

    #[test]
    fn scope_by_category() {
        let p = Promotion::new(PromotionKind::Percent, 50, 0, 0, 0, vec![], vec![9]).unwrap();
        let lines = [
            line(1, Some(9), 100, 1),
            line(2, Some(8), 100, 1),
            line(3, None, 100, 1),
        ];
        let cart = price_cart(&lines, Some(&p), 0, "USD").unwrap();
        assert_eq!(discounts(&cart), vec![50, 0, 0]);
    }

    #[test]
    fn min_subtotal_gate() {
        let p = Promotion::new(PromotionKind::Percent, 50, 0, 0, 1000, vec![], vec![]).unwrap();
        let cart = price_cart(&[line(1, None, 999, 1)], Some(&p), 0, "USD").unwrap();
        assert_eq!(cart.discount, 0);
        assert!(!cart.promotion_applied);
        let cart = price_cart(&[line(1, None, 1000, 1)], Some(&p), 0, "USD").unwrap();
        assert_eq!(cart.discount, 500);
        assert!(cart.promotion_applied);
    }

    #[test]
    fn overflow_is_an_error() {
        let big = [line(1, None, i64::MAX, 2)];
        assert_eq!(
            price_cart(&big, None, 0, "USD"),
            Err(PricingFailure::Overflow)
        );
        let two = [line(1, None, i64::MAX, 1), line(2, None, 1, 1)];
        assert_eq!(
            price_cart(&two, None, 0, "USD"),
            Err(PricingFailure::Overflow)
        );
        let taxed = [line(1, None, i64::MAX, 1)];
        assert_eq!(
            price_cart(&taxed, None, 20_000, "USD"),
            Err(PricingFailure::Overflow)
        );
        // Largest values that fit still price.
        let cart = price_cart(&taxed, Some(&promo(PromotionKind::Percent, 100)), 0, "USD").unwrap();
        assert_eq!(cart.total, 0);
    }

    #[test]
    fn invalid_input() {
        assert!(price_cart(&[line(1, None, -1, 1)], None, 0, "USD").is_err());
        assert!(price_cart(&[line(1, None, 1, 0)], None, 0, "USD").is_err());
        assert!(price_cart(&[], None, -1, "USD").is_err());
        assert!(price_cart(&[], None, 100_001, "USD").is_err());
        assert!(Promotion::new(PromotionKind::Percent, 0, 0, 0, 0, vec![], vec![]).is_err());
        assert!(Promotion::new(PromotionKind::Percent, 101, 0, 0, 0, vec![], vec![]).is_err());
        assert!(Promotion::new(PromotionKind::Fixed, 0, 0, 0, 0, vec![], vec![]).is_err());
        assert!(Promotion::new(PromotionKind::BuyXGetY, 0, 0, 1, 0, vec![], vec![]).is_err());
        assert!(Promotion::new(PromotionKind::Fixed, 5, 0, 0, -1, vec![], vec![]).is_err());
        assert!(PromotionKind::from_name("bogus").is_err());
    }

    #[test]
    fn empty_cart() {
        let cart = price_cart(&[], Some(&promo(PromotionKind::Fixed, 5)), 1000, "GBP").unwrap();
        assert_eq!(
            (cart.subtotal, cart.discount, cart.tax, cart.total),
            (0, 0, 0, 0)
        );
        assert!(!cart.promotion_applied);
    }
}
