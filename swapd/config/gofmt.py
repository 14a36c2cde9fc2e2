"""Macro values rendered as text the way Go's ``fmt`` ``%v`` renders them.

llama-swap substitutes a macro into ``cmd``, ``proxy`` and the other text fields with
``fmt.Sprintf("%v", value)`` (reference section 2.6), so a config file written for it
expects Go's spelling: ``true``/``false`` for booleans and Go's shortest ``%g`` form for
floats. Python's own text differs (``str(True)`` is ``True``, ``str(1.0)`` is ``1.0``,
``str(1e6)`` is ``1000000.0``), so a config such as ``--flag ${on} --temp ${t}`` would
start the upstream with different arguments than llama-swap does.
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["format_float_v", "render_scalar"]

# Go's strconv picks %e over %f for 'g' with shortest precision when the decimal
# exponent is < -4 or >= this (ftoa.go: "if shortest { eprec = 6 }").
_SHORTEST_EPREC = 6


def render_scalar(value: str | int | float | bool) -> str:
    """Render a macro value as Go's ``fmt.Sprint`` / ``%v`` would.

    - ``bool`` → ``true`` / ``false``
    - ``int`` → decimal digits
    - ``str`` → unchanged
    - ``float`` → :func:`format_float_v`

    Raises ``TypeError`` for any other type (config validation only lets scalars through).
    """
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float_v(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"not a scalar macro value: {type(value).__name__}")


def format_float_v(value: float) -> str:
    """Go's ``%v`` for a float64: ``strconv.FormatFloat(value, 'g', -1, 64)``, as fmt prints it.

    The digits are the shortest ones that read back as the same float (Python's ``repr``
    finds the same digits as Go). With ``exp`` the decimal exponent of the first digit
    (``123.4`` → 2), the number is written

    - in exponent form when ``exp < -4`` or ``exp >= 6``: the digits as ``d.ddd``, then
      ``e``, the sign and at least two exponent digits (``1e+06``, ``1.5e-07``,
      ``1.23456789e+08``, ``1e+100``);
    - otherwise plainly, with no trailing ``.0`` (``1``, ``100000``, ``0.0001``,
      ``12345.678``).

    Specials: ``+Inf``, ``-Inf``, ``NaN``; negative zero is ``-0``.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"

    # Shortest round-trip digits, without trailing zeros, and the position of the
    # decimal point relative to them: value = 0.<digits> * 10**point.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)  # finite
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent
    exp = point - 1

    if exp < -4 or exp >= _SHORTEST_EPREC:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"
