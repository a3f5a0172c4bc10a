"""The bottom layer: what every other layer may use and which imports none of them — domain
errors (translated once per edge), the caller's identity, the cart line type and the shared value
types (money in minor units, ids, stock, quantities; values.py)."""
