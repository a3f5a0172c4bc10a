"""The typed facade over the Rust extension; the rest of the code imports from here."""

from __future__ import annotations

from server._native import (
    CartFigures,
    JwtError,
    JwtVerifier,
    PricingError,
    RateLimiter,
    jwt_encode,
    price_cart,
    price_cart_rows,
)

__all__ = [
    "CartFigures",
    "JwtError",
    "JwtVerifier",
    "PricingError",
    "RateLimiter",
    "jwt_encode",
    "price_cart",
    "price_cart_rows",
]
