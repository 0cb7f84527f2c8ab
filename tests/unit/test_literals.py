"""The helpers through which model data reaches C: literals, identifiers, comments."""

from __future__ import annotations

import re
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faustgen.codegen.literals import (
    c_comment,
    c_float,
    c_float_array,
    c_int,
    sanitize_identifier,
)

finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(finite_f32)
def test_c_float_round_trips_float32(x):
    text = c_float(x)
    assert text.endswith("f")
    back = np.float32(float(text[:-1]))
    assert struct.pack("<f", back) == struct.pack("<f", np.float32(x))  # bit exact, incl. -0.0


@given(finite_f32)
def test_c_float_is_a_c_float_literal(x):
    assert re.fullmatch(r"-?\d+(\.\d*)?(e-?\d+)?f", c_float(x))


def test_c_float_is_short_and_handles_specials():
    assert c_float(0.1) == "0.1f"
    assert c_float(1.0) == "1.0f"
    assert c_float(np.float32(1) / 3) == "0.33333334f"
    assert c_float(-0.0) == "-0.0f"
    assert c_float(float("inf")) == "INFINITY"
    assert c_float(float("-inf")) == "-INFINITY"
    assert c_float(float("nan")) == "NAN"
    assert c_float(1e-45) == "1e-45f"  # smallest subnormal


def test_c_int():
    assert c_int(7) == "7"
    assert c_int(-(2**31) + 1) == "-2147483647"
    assert c_int(2**40) == "1099511627776LL"


@given(st.lists(finite_f32, min_size=1, max_size=50))
def test_float_array_literals_round_trip(values):
    texts = c_float_array(np.array(values, np.float32), per_line=7).replace("\n", " ").split(",")
    back = np.array([float(t.strip()[:-1]) for t in texts], np.float32)
    assert back.tobytes() == np.array(values, np.float32).tobytes()  # bit exact, incl. -0.0
    assert all(re.fullmatch(r"-?\d+(\.\d*)?(e[-+]?\d+)?f", t.strip()) for t in texts)


def test_float_array_layout():
    text = c_float_array(np.arange(10, dtype=np.float32), per_line=4)
    lines = text.split("\n")
    assert len(lines) == 3
    assert lines[0] == "    0.0f, 1.0f, 2.0f, 3.0f,"
    assert lines[-1].endswith("9.0f")


@given(st.text())
def test_sanitize_identifier_is_always_a_c_identifier(s):
    ident = sanitize_identifier(s)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident)
    assert len(ident) <= 41


@pytest.mark.parametrize("keyword", ["int", "return", "static", "while"])
def test_sanitize_identifier_avoids_keywords(keyword):
    assert sanitize_identifier(keyword) != keyword


@given(st.text())
@settings(max_examples=300)
def test_c_comment_cannot_end_or_nest_the_comment(s):
    text = c_comment(s)
    assert "*/" not in text and "/*" not in text and "??" not in text
    assert "\n" not in text and "\r" not in text
    assert all(32 <= ord(c) < 127 for c in text)
    assert not text.endswith("\\")


def test_hostile_comment_compiles_as_a_comment(tmp_path):
    payload = 'x */ int evil(void) { return 1; } /* \n#include "/etc/passwd" ??/'
    src = tmp_path / "c.c"
    src.write_text(f"/* {c_comment(payload)} */\nint ok(void) {{ return 0; }}\n")
    out = subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-c",
            str(src),
            "-o",
            str(tmp_path / "c.o"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    nm = subprocess.run(["nm", str(tmp_path / "c.o")], capture_output=True, text=True).stdout
    assert "evil" not in nm and "ok" in nm
