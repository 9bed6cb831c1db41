"""Argument checks: every value is validated here before any C sees it."""

from __future__ import annotations

import operator

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def as_int(value: object, what: str) -> int:
    """``value`` as a Python int (anything with ``__index__``), else TypeError."""
    if type(value) is int:
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None


def as_int64(value: object, what: str) -> int:
    """``value`` as an int in the signed 64-bit range, else TypeError/OverflowError."""
    v = as_int(value, what)
    if not INT64_MIN <= v <= INT64_MAX:
        raise OverflowError(f"{what}={v} does not fit in a signed 64-bit integer")
    return v


def as_index(value: object, size: int, what: str = "index") -> int:
    """``value`` as an index in ``range(size)``, else TypeError/IndexError."""
    v = as_int(value, what)
    if not 0 <= v < size:
        raise IndexError(f"{what} {v} out of range: this object has {size} (valid: 0..{size - 1})")
    return v
