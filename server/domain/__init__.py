"""The bottom layer: what every other layer may use and which imports none of them — domain
errors (translated once per edge), the caller's identity, and the cart line type."""
