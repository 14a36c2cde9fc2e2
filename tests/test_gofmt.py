"""Macro values rendered like Go's ``%v`` (reference section 2.6, "Text rendering")."""

from __future__ import annotations

import math
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.config.gofmt import format_float_v, render_scalar


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Known Go outputs (fmt.Sprint / %v of a float64).
        (1.0, "1"),
        (0.7, "0.7"),
        (1000000.0, "1e+06"),
        (100000.0, "100000"),
        (123456789.0, "1.23456789e+08"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (3.14159, "3.14159"),
        (-2.5, "-2.5"),
        (1e21, "1e+21"),
        (12345.678, "12345.678"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
        (-0.0, "-0"),
        # Derived from the same rule (exponent form iff exp < -4 or exp >= 6).
        (0.0, "0"),
        (999999.0, "999999"),
        (999999.5, "999999.5"),
        (1234567.0, "1.234567e+06"),
        (-1000000.0, "-1e+06"),
        (0.1, "0.1"),
        (0.00012, "0.00012"),
        (0.000012, "1.2e-05"),
        (-0.00001, "-1e-05"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e100, "1e+100"),
        (1e-100, "1e-100"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        (2.5e-5, "2.5e-05"),
        (123456.7, "123456.7"),
        (16384.0, "16384"),
        (1e16, "1e+16"),
    ],
)
def test_float_matches_go(value: float, expected: str) -> None:
    assert render_scalar(value) == expected
    assert format_float_v(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (10001, "10001"),
        (-42, "-42"),
        (16384, "16384"),
        (2**63 - 1, "9223372036854775807"),
        ("", ""),
        ("True", "True"),
        ("1.0", "1.0"),
        ("  spaced ${x} ", "  spaced ${x} "),
    ],
)
def test_non_float_scalars(value: str | int | bool, expected: str) -> None:
    assert render_scalar(value) == expected


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, b"x"])
def test_non_scalar_is_rejected(value: object) -> None:
    with pytest.raises(TypeError, match="not a scalar"):
        render_scalar(value)  # type: ignore[arg-type]


_GO_FLOAT = re.compile(r"-?(?:[1-9](?:\.\d*[1-9])?e[+-]\d{2,3}|\d+(?:\.\d*[1-9])?)")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_round_trips_in_go_shape(value: float) -> None:
    text = format_float_v(value)
    assert float(text) == value
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, value)
    assert _GO_FLOAT.fullmatch(text), text


@given(st.floats(allow_nan=False, allow_infinity=False).filter(bool))
def test_float_agrees_with_python_repr(value: float) -> None:
    # Python's repr has the same shortest digits and the same exponent spelling; it only
    # switches to exponent form later (exp >= 16 instead of 6) and keeps a ".0".
    # (Python's f"{value:.Ne}" is not an oracle: it rounds the exact binary value, which
    # differs from the shortest digits at powers of two, e.g. 2**-24.)
    text = format_float_v(value)
    exp = Decimal(repr(value)).adjusted()
    if exp < -4 or exp >= 16:
        assert text == repr(value)
    elif exp < 6:
        assert text == repr(value).removesuffix(".0")
    else:
        digits = repr(abs(value)).removesuffix(".0").replace(".", "").rstrip("0")
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        assert text == f"{'-' if value < 0 else ''}{mantissa}e+{exp:02d}"


def test_power_of_two_tie() -> None:
    # 2**-24: of the two nearest 16-digit decimals only ...063 reads back (the gap below
    # a power of two is half the gap above), and Go prints it too.
    assert format_float_v(2.0**-24) == "5.960464477539063e-08"
