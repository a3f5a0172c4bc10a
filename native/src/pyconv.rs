//! Conversions between Python objects and the pure-Rust types of the core
//! modules. Kept out of `lib.rs` so that it stays a thin surface, and out of
//! the core modules so that they stay free of Python.

use std::ptr;
use std::str::FromStr;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::errors::PricingFailure;
use crate::pricing::{Line, PricedCart, Promotion, PromotionKind};

/// Nesting deeper than this is refused when serialising claims.
const MAX_DEPTH: usize = 128;

// ---------------------------------------------------------------------------
// JSON → Python
// ---------------------------------------------------------------------------

/// The key under which serde_json (with `arbitrary_precision`) hands over a
/// number that is not an i64/u64 (floats, big integers, `-0`).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn is_json_number(text: &str) -> bool {
    fn digits(b: &[u8]) -> usize {
        b.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let mut b = text.as_bytes();
    if let [b'-', rest @ ..] = b {
        b = rest;
    }
    match b {
        [b'0', rest @ ..] => b = rest,
        [b'1'..=b'9', ..] => b = &b[digits(b)..],
        _ => return false,
    }
    if let [b'.', rest @ ..] = b {
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        b = &rest[n..];
    }
    if let [b'e' | b'E', rest @ ..] = b {
        let rest = match rest {
            [b'+' | b'-', r @ ..] => r,
            r => r,
        };
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        b = &rest[n..];
    }
    b.is_empty()
}

/// A number literal (as text) as a Python int (any size) or float.
fn number_text_to_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(i.into_pyobject(py)?.into_any());
        }
        return py.get_type::<PyInt>().call1((text,));
    }
    let f = f64::from_str(text).unwrap_or(f64::NAN);
    Ok(PyFloat::new(py, f).into_any())
}

/// Builds Python objects straight from the JSON parser, with no
/// intermediate `Value`. Python errors are parked in `err` (serde errors
/// cannot carry them) and surfaced by [`json_to_py`].
#[derive(Clone, Copy)]
struct PySeed<'a, 'py> {
    py: Python<'py>,
    err: &'a std::cell::RefCell<Option<PyErr>>,
}

impl<'a, 'py> PySeed<'a, 'py> {
    fn ok<T, E: serde::de::Error>(&self, r: PyResult<T>) -> Result<T, E> {
        r.map_err(|e| {
            *self.err.borrow_mut() = Some(e);
            E::custom("python error")
        })
    }
}

impl<'de, 'py> serde::de::DeserializeSeed<'de> for PySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key: either an ordinary string or serde_json's number marker.
enum Key<'py> {
    Str(Bound<'py, PyString>),
    Number,
}

struct KeySeed<'py>(Python<'py>);

impl<'de, 'py> serde::de::DeserializeSeed<'de> for KeySeed<'py> {
    type Value = Key<'py>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> serde::de::Visitor<'de> for KeySeed<'py> {
    type Value = Key<'py>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if v == NUMBER_TOKEN {
            Key::Number
        } else {
            Key::Str(PyString::new(self.0, v))
        })
    }
}

impl<'de, 'py> serde::de::Visitor<'de> for PySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into_pyobject(self.py).map_err(E::custom)?.into_any())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into_pyobject(self.py).map_err(E::custom)?.into_any())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.py, v).into_any())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.py, v).into_any())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.py);
        while let Some(item) = seq.next_element_seed(self)? {
            self.ok(list.append(item))?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        while let Some(key) = map.next_key_seed(KeySeed(self.py))? {
            match key {
                Key::Number => {
                    // serde_json's own marker always carries a valid number;
                    // a JSON object that merely uses that key does not.
                    let text: String = map.next_value()?;
                    if !is_json_number(&text) {
                        return Err(serde::de::Error::custom("bad number"));
                    }
                    return self.ok(number_text_to_py(self.py, &text));
                }
                Key::Str(k) => {
                    let v = map.next_value_seed(self)?;
                    self.ok(dict.set_item(k, v))?;
                }
            }
        }
        Ok(dict.into_any())
    }
}

/// Parse JSON text straight into Python objects. `Ok(None)` when the text
/// is not valid JSON.
pub fn json_to_py<'py>(py: Python<'py>, json: &[u8]) -> PyResult<Option<Bound<'py, PyAny>>> {
    let err = std::cell::RefCell::new(None);
    let seed = PySeed { py, err: &err };
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    match (parsed, err.into_inner()) {
        (_, Some(e)) => Err(e),
        (Ok(v), None) => Ok(Some(v)),
        (Err(_), None) => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Python → JSON
// ---------------------------------------------------------------------------

/// Serialises a Python object as JSON (dict with str keys, list, tuple, str,
/// int of any size, finite float, bool, None), preserving dict order.
pub struct PyJson<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    depth: usize,
}

impl<'a, 'py> PyJson<'a, 'py> {
    pub fn new(obj: &'a Bound<'py, PyAny>) -> Self {
        PyJson { obj, depth: 0 }
    }

    fn child<'b>(&self, obj: &'b Bound<'py, PyAny>) -> PyJson<'b, 'py> {
        PyJson {
            obj,
            depth: self.depth + 1,
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

impl Serialize for PyJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let obj = self.obj;
        if self.depth > MAX_DEPTH {
            return Err(S::Error::custom("nesting too deep"));
        }
        if obj.is_none() {
            return s.serialize_unit();
        }
        if let Ok(b) = obj.downcast::<PyBool>() {
            return s.serialize_bool(b.is_true());
        }
        if let Ok(i) = obj.downcast::<PyInt>() {
            if let Ok(v) = i.extract::<i64>() {
                return s.serialize_i64(v);
            }
            if let Ok(v) = i.extract::<u64>() {
                return s.serialize_u64(v);
            }
            let text = i
                .call_method0(intern!(obj.py(), "__index__"))
                .and_then(|i| i.str())
                .map_err(S::Error::custom)?;
            let n = Number::from_str(text.to_str().map_err(S::Error::custom)?)
                .map_err(S::Error::custom)?;
            return n.serialize(s);
        }
        if let Ok(f) = obj.downcast::<PyFloat>() {
            let v = f.value();
            if !v.is_finite() {
                return Err(S::Error::custom(
                    "Out of range float values are not JSON compliant",
                ));
            }
            return s.serialize_f64(v);
        }
        if let Ok(st) = obj.downcast::<PyString>() {
            return s.serialize_str(st.to_str().map_err(S::Error::custom)?);
        }
        if let Ok(d) = obj.downcast::<PyDict>() {
            let mut map = s.serialize_map(Some(d.len()))?;
            for (k, v) in d.iter() {
                let key = k.downcast::<PyString>().map_err(|_| {
                    S::Error::custom(format!("keys must be str, not {}", type_name(&k)))
                })?;
                map.serialize_entry(key.to_str().map_err(S::Error::custom)?, &self.child(&v))?;
            }
            return map.end();
        }
        if let Ok(l) = obj.downcast::<PyList>() {
            let mut seq = s.serialize_seq(Some(l.len()))?;
            for item in l.iter() {
                seq.serialize_element(&self.child(&item))?;
            }
            return seq.end();
        }
        if let Ok(t) = obj.downcast::<PyTuple>() {
            let mut seq = s.serialize_seq(Some(t.len()))?;
            for item in t.iter() {
                seq.serialize_element(&self.child(&item))?;
            }
            return seq.end();
        }
        Err(S::Error::custom(format!(
            "Object of type {} is not JSON serializable",
            type_name(obj)
        )))
    }
}

/// `obj` (which must be a dict) as compact JSON bytes.
pub fn dict_to_json(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if !obj.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a dict, not {}",
            type_name(obj)
        )));
    }
    serde_json::to_vec(&PyJson::new(obj))
        .map_err(|e| PyTypeError::new_err(format!("{what} are not JSON-serialisable: {e}")))
}

/// `obj` (which must be a dict) as a JSON object.
pub fn dict_to_map(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Map<String, Value>> {
    let bytes = dict_to_json(obj, what)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(PyTypeError::new_err(format!(
            "{what} must be a JSON object"
        ))),
    }
}

// ---------------------------------------------------------------------------
// Pricing
// ---------------------------------------------------------------------------

/// The `tax_rate_bps` argument: an `int` (not `bool`) that fits in i64;
/// anything else is a
/// `PricingError`.
pub struct TaxRateBps(pub i64);

impl<'py> FromPyObject<'py> for TaxRateBps {
    fn extract_bound(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        Ok(TaxRateBps(required_int(Some(obj.clone()), &|| {
            "tax_rate_bps".into()
        })?))
    }
}

fn invalid(msg: String) -> PricingFailure {
    PricingFailure::Invalid(msg)
}

/// `obj` when it is an exact `int` that fits in i64, read with one C call.
fn exact_i64(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if !obj.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let mut overflow = 0;
    // SAFETY: the GIL is held and `obj` is an exact int, for which this call
    // neither fails nor runs Python code; out of range, it sets `overflow`.
    let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
    (overflow == 0).then_some(v)
}

/// An int (not bool) that fits in i64; `Ok(None)` when `obj` is None and
/// `optional`.
fn int_value(
    obj: Option<Bound<'_, PyAny>>,
    optional: bool,
    what: &dyn Fn() -> String,
) -> Result<Option<i64>, PricingFailure> {
    let obj = match obj {
        None if optional => return Ok(None),
        None => return Err(invalid(format!("{} is required", what()))),
        Some(o) => o,
    };
    // Fast path: an exact int (bool is a subclass, so never exact) that fits.
    if let Some(v) = exact_i64(&obj) {
        return Ok(Some(v));
    }
    if obj.is_none() && optional {
        return Ok(None);
    }
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(invalid(format!(
            "{} must be an int, not {}",
            what(),
            type_name(&obj)
        )));
    }
    obj.extract::<i64>()
        .map(Some)
        .map_err(|_| invalid(format!("{} is out of the 64-bit range", what())))
}

fn required_int(obj: Option<Bound<'_, PyAny>>, what: &dyn Fn() -> String) -> PyResult<i64> {
    Ok(int_value(obj, false, what)?.unwrap_or_default())
}

fn get<'py>(
    d: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    d.get_item(key)
}

fn id_list(obj: Option<Bound<'_, PyAny>>, name: &str) -> PyResult<Vec<i64>> {
    let obj = match obj {
        None => return Ok(Vec::new()),
        Some(o) if o.is_none() => return Ok(Vec::new()),
        Some(o) => o,
    };
    let items = if let Ok(list) = obj.downcast::<PyList>() {
        list.iter().collect::<Vec<_>>()
    } else if let Ok(tuple) = obj.downcast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(invalid(format!("promotion.{name} must be a list of ints or None")).into());
    };
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        ids.push(required_int(Some(item), &|| {
            format!("promotion.{name}[{i}]")
        })?);
    }
    Ok(ids)
}

/// The values of the four line fields of `d` (`None` when absent), in one
/// pass over its entries: keys are matched by identity with the interned
/// names first, by text otherwise ([`line_field`]).
fn line_fields<'py>(
    d: &Bound<'py, PyDict>,
    interned: &[&Bound<'py, PyString>; 4],
) -> [Option<Bound<'py, PyAny>>; 4] {
    let mut fields = [ptr::null_mut(); 4];
    let (mut pos, mut key, mut value) = (0, ptr::null_mut(), ptr::null_mut());
    // SAFETY: the GIL is held and `d` is a dict. PyDict_Next hands out
    // borrowed references, valid while the dict is unchanged; nothing in this
    // loop can change it (pointer comparisons, and `line_field`, which
    // neither allocates nor runs Python code).
    while unsafe { ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut key, &mut value) } != 0 {
        let field = interned.iter().position(|k| k.as_ptr() == key);
        if let Some(f) = field.or_else(|| line_field(key)) {
            fields[f] = value;
        }
    }
    // SAFETY: still borrowed from the unchanged dict; each becomes a strong
    // reference.
    fields.map(|v| unsafe { Bound::from_borrowed_ptr_or_opt(d.py(), v) })
}

/// Which of the four line fields `key` (a valid reference) names, by text:
/// keys built at run time (e.g. by a JSON decoder), `str` subclasses.
fn line_field(key: *mut ffi::PyObject) -> Option<usize> {
    // SAFETY: the GIL is held and `key` is valid; the comparison is only made
    // on a str, and never fails, allocates or runs Python code.
    if unsafe { ffi::PyUnicode_Check(key) } == 0 {
        return None;
    }
    [c"product_id", c"category_id", c"unit_price", c"quantity"]
        .iter()
        .position(|name| unsafe { ffi::PyUnicode_CompareWithASCIIString(key, name.as_ptr()) } == 0)
}

/// The lines of a cart and, for each, the `int` to hand back as its
/// `product_id`: the caller's own object when it is an exact `int` (no new
/// allocation), a plain `int` otherwise.
pub struct CartLines<'py> {
    pub lines: Vec<Line>,
    pub product_ids: Vec<Bound<'py, PyAny>>,
}

/// `[{"product_id", "category_id", "unit_price", "quantity"}, ...]`
pub fn extract_lines<'py>(lines: &Bound<'py, PyAny>) -> PyResult<CartLines<'py>> {
    let py = lines.py();
    let interned = [
        intern!(py, "product_id"),
        intern!(py, "category_id"),
        intern!(py, "unit_price"),
        intern!(py, "quantity"),
    ];
    let list = lines
        .downcast::<PyList>()
        .map_err(|_| invalid(format!("lines must be a list, not {}", type_name(lines))))?;
    let mut out = CartLines {
        lines: Vec::with_capacity(list.len()),
        product_ids: Vec::with_capacity(list.len()),
    };
    for (i, item) in list.iter().enumerate() {
        let d = item
            .downcast::<PyDict>()
            .map_err(|_| invalid(format!("lines[{i}] must be a dict")))?;
        let [product, category, price, quantity] = line_fields(d, &interned);
        let product_id = required_int(product.clone(), &|| format!("lines[{i}].product_id"))?;
        out.lines.push(Line {
            product_id,
            category_id: int_value(category, true, &|| format!("lines[{i}].category_id"))?,
            unit_price: required_int(price, &|| format!("lines[{i}].unit_price"))?,
            quantity: required_int(quantity, &|| format!("lines[{i}].quantity"))?,
        });
        out.product_ids.push(match product {
            Some(p) if p.is_exact_instance_of::<PyInt>() => p,
            _ => product_id.into_pyobject(py)?.into_any(),
        });
    }
    Ok(out)
}

/// `[(product_id, category_id | None, unit_price, quantity), ...]`: a list
/// or tuple of 4-tuples (tuple subclasses such as a `NamedTuple` included).
pub fn extract_rows(rows: &Bound<'_, PyAny>) -> PyResult<Vec<Line>> {
    if let Ok(list) = rows.downcast::<PyList>() {
        rows_to_lines(list.len(), list.iter())
    } else if let Ok(tuple) = rows.downcast::<PyTuple>() {
        rows_to_lines(tuple.len(), tuple.iter())
    } else {
        Err(invalid(format!(
            "rows must be a list or tuple, not {}",
            type_name(rows)
        ))
        .into())
    }
}

fn rows_to_lines<'py>(
    len: usize,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
) -> PyResult<Vec<Line>> {
    let mut lines = Vec::with_capacity(len);
    for (i, item) in items.enumerate() {
        let row = match item.downcast::<PyTuple>() {
            Ok(row) if row.len() == 4 => row,
            _ => {
                return Err(invalid(format!(
                    "rows[{i}] must be a tuple (product_id, category_id, unit_price, quantity)"
                ))
                .into())
            }
        };
        let int_at = |f: usize, name: &str, optional: bool| -> PyResult<Option<i64>> {
            // SAFETY: `row` is a tuple of length 4 and f < 4; the item is
            // borrowed from the tuple, which `row` keeps alive.
            let item = unsafe { row.get_borrowed_item_unchecked(f) };
            if let Some(v) = exact_i64(&item) {
                return Ok(Some(v));
            }
            Ok(int_value(Some(item.to_owned()), optional, &|| {
                format!("rows[{i}].{name}")
            })?)
        };
        lines.push(Line {
            product_id: int_at(0, "product_id", false)?.unwrap_or_default(),
            category_id: int_at(1, "category_id", true)?,
            unit_price: int_at(2, "unit_price", false)?.unwrap_or_default(),
            quantity: int_at(3, "quantity", false)?.unwrap_or_default(),
        });
    }
    Ok(lines)
}

/// The per-line figures of `cart` as three tuples of ints: subtotals,
/// discounts, totals. A line with nothing off shares its subtotal object as
/// its total (equal ints; one allocation fewer).
pub fn line_columns<'py>(py: Python<'py>, cart: &PricedCart) -> PyResult<[Bound<'py, PyTuple>; 3]> {
    let int = |v: i64| -> Bound<'py, PyAny> {
        let Ok(obj) = v.into_pyobject(py);
        obj.into_any()
    };
    let subtotals: Vec<Bound<'py, PyAny>> =
        cart.lines.iter().map(|l| int(l.line_subtotal)).collect();
    let discounts = PyTuple::new(py, cart.lines.iter().map(|l| l.line_discount))?;
    let totals = PyTuple::new(
        py,
        cart.lines.iter().zip(&subtotals).map(|(l, subtotal)| {
            if l.line_discount == 0 {
                subtotal.clone()
            } else {
                int(l.line_total)
            }
        }),
    )?;
    Ok([PyTuple::new(py, subtotals)?, discounts, totals])
}

/// `{"kind", "value", "buy_quantity", "get_quantity", "min_subtotal",
/// "product_ids", "category_ids"}`
pub fn extract_promotion(promo: &Bound<'_, PyAny>) -> PyResult<Promotion> {
    let py = promo.py();
    let d = promo.downcast::<PyDict>().map_err(|_| {
        invalid(format!(
            "promotion must be a dict, not {}",
            type_name(promo)
        ))
    })?;
    let kind_obj =
        get(d, intern!(py, "kind"))?.ok_or_else(|| invalid("promotion.kind is required".into()))?;
    let kind_str = kind_obj
        .downcast::<PyString>()
        .map_err(|_| invalid("promotion.kind must be a str".into()))?;
    let kind = PromotionKind::from_name(kind_str.to_str()?)?;
    let opt = |key: &Bound<'_, PyString>, name: &'static str| -> PyResult<i64> {
        Ok(int_value(get(d, key)?, true, &|| format!("promotion.{name}"))?.unwrap_or(0))
    };
    let value = match kind {
        PromotionKind::BuyXGetY => opt(intern!(py, "value"), "value")?,
        _ => required_int(get(d, intern!(py, "value"))?, &|| "promotion.value".into())?,
    };
    let (buy, get_q) = match kind {
        PromotionKind::BuyXGetY => (
            required_int(get(d, intern!(py, "buy_quantity"))?, &|| {
                "promotion.buy_quantity".into()
            })?,
            required_int(get(d, intern!(py, "get_quantity"))?, &|| {
                "promotion.get_quantity".into()
            })?,
        ),
        _ => (
            opt(intern!(py, "buy_quantity"), "buy_quantity")?,
            opt(intern!(py, "get_quantity"), "get_quantity")?,
        ),
    };
    let min_subtotal = opt(intern!(py, "min_subtotal"), "min_subtotal")?;
    let product_ids = id_list(get(d, intern!(py, "product_ids"))?, "product_ids")?;
    let category_ids = id_list(get(d, intern!(py, "category_ids"))?, "category_ids")?;
    Ok(Promotion::new(
        kind,
        value,
        buy,
        get_q,
        min_subtotal,
        product_ids,
        category_ids,
    )?)
}

/// The `promotion` argument of the pricing functions: absent or `None` is no
/// promotion.
pub fn optional_promotion(promo: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Promotion>> {
    match promo {
        Some(p) if !p.is_none() => Ok(Some(extract_promotion(p)?)),
        _ => Ok(None),
    }
}

/// The result of `price_cart`: `product_ids` are the objects from
/// [`CartLines`], one per line.
pub fn priced_cart_to_py<'py>(
    py: Python<'py>,
    cart: &PricedCart,
    product_ids: &[Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyDict>> {
    let k_product = intern!(py, "product_id");
    let k_sub = intern!(py, "line_subtotal");
    let k_disc = intern!(py, "line_discount");
    let k_total = intern!(py, "line_total");
    debug_assert_eq!(cart.lines.len(), product_ids.len());
    let mut items = Vec::with_capacity(cart.lines.len());
    for (l, product_id) in cart.lines.iter().zip(product_ids) {
        let d = PyDict::new(py);
        let subtotal = l.line_subtotal.into_pyobject(py)?;
        d.set_item(k_product, product_id)?;
        d.set_item(k_sub, &subtotal)?;
        d.set_item(k_disc, l.line_discount)?;
        // Nothing off: the total is the subtotal, the same object.
        if l.line_discount == 0 {
            d.set_item(k_total, subtotal)?;
        } else {
            d.set_item(k_total, l.line_total)?;
        }
        items.push(d);
    }
    let lines = PyList::new(py, items)?;
    let out = PyDict::new(py);
    out.set_item(intern!(py, "lines"), lines)?;
    out.set_item(intern!(py, "subtotal"), cart.subtotal)?;
    out.set_item(intern!(py, "discount"), cart.discount)?;
    out.set_item(intern!(py, "tax"), cart.tax)?;
    out.set_item(intern!(py, "total"), cart.total)?;
    out.set_item(intern!(py, "promotion_applied"), cart.promotion_applied)?;
    out.set_item(intern!(py, "currency"), cart.currency)?;
    out.set_item(intern!(py, "exponent"), cart.exponent)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::is_json_number;

    #[test]
    fn json_number_grammar() {
        for ok in [
            "0", "-0", "12", "-12", "1.5", "0.25", "1e9", "1E+9", "-2.5e-3",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x10", "1 ", "NaN", "abc",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
