"""The typed facade over the Rust extension; the rest of the code imports from here."""

from __future__ import annotations

from server._native import (
    JwtError,
    JwtVerifier,
    PricingError,
    RateLimiter,
    jwt_encode,
    price_cart,
)

__all__ = ["JwtError", "JwtVerifier", "PricingError", "RateLimiter", "jwt_encode", "price_cart"]
