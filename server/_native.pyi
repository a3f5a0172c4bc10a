"""Typed stubs of the Rust extension ``server._native`` (crate ``native/``).

Hot paths of the storefront gateway: JWT signing/verification, cart pricing
in integer minor units, and a keyed GCRA rate limiter.
"""

from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict, final

__all__ = [
    "CartFigures",
    "JwtError",
    "JwtVerifier",
    "PricingError",
    "RateLimitError",
    "RateLimiter",
    "jwt_encode",
    "price_cart",
    "price_cart_rows",
]

_Algorithm = Literal["HS256", "RS256", "EdDSA"]

# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

class JwtError(ValueError):
    """A token (or key) was refused. ``str(err)`` is a short, stable reason:

    "token too large", "malformed", "bad base64", "bad header",
    "missing algorithm", "algorithm none refused", "algorithm mismatch",
    "crit header unsupported", "bad signature", "bad payload", "missing exp",
    "exp not integer", "expired", "nbf not integer", "not yet valid",
    "iat not integer", "iat in future", "missing issuer", "bad issuer",
    "missing audience", "bad audience", "unexpected audience", "missing typ",
    "typ mismatch"; for keys and arguments: "unsupported algorithm",
    "invalid key", "asymmetric key used as HMAC secret",
    "bad header parameters", "signing failed", "bad configuration".
    """

class PricingError(ValueError):
    """Bad cart/promotion input (missing field, wrong type, out of range,
    unknown currency) or an amount that overflows a signed 64-bit integer."""

class RateLimitError(ValueError):
    """Bad limiter configuration or check argument."""

# ---------------------------------------------------------------------------
# JWT
# ---------------------------------------------------------------------------

def jwt_encode(
    claims: dict[str, Any],
    key: str | bytes,
    algorithm: _Algorithm | str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign ``claims`` into a compact JWS.

    ``key``: the HMAC secret (HS256; a PEM/SSH key is refused), a PKCS#1 or
    PKCS#8 RSA private key PEM of 2048..4096 bits (RS256) or a PKCS#8 Ed25519
    private key PEM (EdDSA). The header is ``{"alg": algorithm, "typ": "JWT"}``
    merged with ``headers`` (``"typ": None`` drops ``typ``; another ``alg`` is
    refused). Claims must be JSON-serialisable (str keys, str, int, finite
    float, bool, None, list, tuple, dict) or ``TypeError`` is raised. Parsed
    keys are cached (last 8). Raises :class:`JwtError` for a bad key or
    algorithm. The GIL is released while signing with RS256/EdDSA.
    """

@final
class JwtVerifier:
    """Verifies tokens of one algorithm with one key, parsed once.

    ``key``: HS256 secret; RS256 public key PEM (PKCS#1 or SPKI) or private
    key PEM (PKCS#1/PKCS#8), 2048..8192 bits; EdDSA public key PEM (SPKI) or
    private PKCS#8. A PEM/SSH key given for HS256 is refused (no algorithm
    confusion). Bad keys or settings raise :class:`JwtError`.

    ``issuer``: exact ``iss`` required. ``audience``: the token's ``aud``
    (a string or list of strings) must contain it (or one of them); a token
    carrying ``aud`` is refused when no audience is configured (RFC 7519).
    ``leeway``: seconds of clock skew allowed on ``exp``/``nbf``/``iat``.
    ``max_bytes``: longer tokens are refused before any decoding.
    """

    def __new__(
        cls,
        key: str | bytes,
        algorithm: _Algorithm | str,
        *,
        issuer: str | None = None,
        audience: str | Sequence[str] | None = None,
        leeway: int = 0,
        max_bytes: int = 8192,
    ) -> JwtVerifier: ...
    @property
    def algorithm(self) -> str: ...
    def verify(
        self, token: str | bytes, *, typ: str | None = None, now: int | None = None
    ) -> dict[str, Any]:
        """Return the claims of a valid token or raise :class:`JwtError`.

        Header ``alg`` must equal the verifier's; ``crit`` is refused;
        ``exp`` is required; ``exp``/``nbf``/``iat`` must be JSON integers.
        ``typ``: the claim ``typ`` (or else ``type``) must equal it.
        ``now``: Unix seconds to check against (default: the system clock).
        The GIL is released during RS256/EdDSA verification.
        """

# ---------------------------------------------------------------------------
# pricing
# ---------------------------------------------------------------------------

class _CartLine(TypedDict):
    product_id: int
    category_id: NotRequired[int | None]
    unit_price: int  # minor units, >= 0
    quantity: int  # >= 1

class _Promotion(TypedDict):
    kind: Literal["percent", "fixed", "buy_x_get_y"]
    value: NotRequired[int]  # percent: 1..100; fixed: minor units >= 1
    buy_quantity: NotRequired[int]  # buy_x_get_y: >= 1
    get_quantity: NotRequired[int]  # buy_x_get_y: >= 1
    min_subtotal: NotRequired[int]  # default 0
    product_ids: NotRequired[list[int] | None]
    category_ids: NotRequired[list[int] | None]

class _PricedLine(TypedDict):
    product_id: int
    line_subtotal: int
    line_discount: int
    line_total: int

class _PricedCart(TypedDict):
    lines: list[_PricedLine]
    subtotal: int
    discount: int
    tax: int
    total: int
    promotion_applied: bool
    currency: str
    exponent: int

def price_cart(
    lines: Sequence[_CartLine] | list[dict[str, Any]],
    *,
    promotion: _Promotion | dict[str, Any] | None = None,
    tax_rate_bps: int = 0,
    currency: str = "USD",
) -> _PricedCart:
    """Price a cart; every amount is an int in minor units.

    ``lines`` must be a list of dicts (:func:`price_cart_rows` takes rows and is
    several times cheaper: no dict per line in or out). A line is in the promotion's scope when
    it names neither products nor categories, or the line's product or
    category is named. Below ``min_subtotal`` (whole cart, before discount)
    nothing is taken off.

    * percent: each in-scope line gets round_half_even(ls * value / 100) off;
    * fixed: min(value, in-scope subtotal) spread pro rata (floor), the
      remainder to the largest in-scope line (first on ties), spilling to the
      next largest if that line has no room left;
    * buy_x_get_y: (quantity // (buy + get)) * get units free per line.

    ``tax = round_half_even((subtotal - discount) * tax_rate_bps / 10000)``
    with ``tax_rate_bps`` in 0..=100000 (default 0). ``currency``: ISO 4217
    code in upper case; its minor-unit exponent is returned as ``exponent``.
    ``promotion_applied`` is true when a promotion took something off.
    Raises :class:`PricingError` on bad input or 64-bit overflow.
    """

@final
class CartFigures:
    """The figures of :func:`price_cart_rows`; the line columns follow the rows."""

    @property
    def line_subtotals(self) -> tuple[int, ...]: ...
    @property
    def line_discounts(self) -> tuple[int, ...]: ...
    @property
    def line_totals(self) -> tuple[int, ...]: ...
    @property
    def subtotal(self) -> int: ...
    @property
    def discount(self) -> int: ...
    @property
    def tax(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def promotion_applied(self) -> bool: ...
    @property
    def currency(self) -> str: ...
    @property
    def exponent(self) -> int: ...

def price_cart_rows(
    rows: Sequence[tuple[int, int | None, int, int]],
    *,
    promotion: _Promotion | dict[str, Any] | None = None,
    tax_rate_bps: int = 0,
    currency: str = "USD",
) -> CartFigures:
    """:func:`price_cart` on rows ``(product_id, category_id, unit_price, quantity)``.

    ``rows`` must be a list or tuple of 4-tuples (``NamedTuple`` rows too). The
    rules, checks and figures are those of :func:`price_cart`; the per-line
    figures come back as three tuples instead of one dict per line, which is
    what makes this form several times cheaper to call. The gateway prices
    with this one.
    """

# ---------------------------------------------------------------------------
# rate limiting
# ---------------------------------------------------------------------------

@final
class RateLimiter:
    """Keyed GCRA limiter: ``limit`` units per ``period_seconds``.

    A fresh key may spend ``burst`` (default ``limit``) units at once, then
    one unit comes back every ``period_seconds / limit``; any window of one
    period admits at most ``burst + limit`` units. Thread-safe (sharded
    locks). At most ``max_keys`` keys are held: a full shard first forgets
    idle keys, then its oldest 1/16 (which then start afresh).
    ``limit`` and ``burst`` are limited to 1..2**32-1.
    """

    def __new__(
        cls,
        limit: int,
        period_seconds: float,
        *,
        burst: int | None = None,
        max_keys: int = 1_000_000,
    ) -> RateLimiter: ...
    def check(
        self, key: str, cost: int = 1, now: float | None = None
    ) -> tuple[bool, int, float, float]:
        """Check (and if allowed, spend) ``cost`` units of ``key``.

        Returns ``(allowed, remaining, reset_after, retry_after)``:
        ``remaining`` units could still be spent now; ``reset_after`` seconds
        until the key is back to a full burst; ``retry_after`` seconds until
        this same request would pass — ``0.0`` when allowed and
        ``math.inf`` when ``cost > burst`` (it never can). ``cost=0`` only
        reports. ``now``: clock in seconds (default ``time.monotonic()``'s
        clock, so both may be mixed); must be finite and >= 0.
        """
    def clear(self) -> None:
        """Forget every key."""
    def __len__(self) -> int:
        """Number of keys currently held."""
    @property
    def limit(self) -> int: ...
    @property
    def burst(self) -> int: ...
    @property
    def period_seconds(self) -> float: ...
    @property
    def max_keys(self) -> int:
        """Keys held at most (``max_keys`` rounded down to the shard count)."""
