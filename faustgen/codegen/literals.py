"""The only ways model data reaches C source: literals, identifiers and comments.

Every float goes through `c_float` (shortest text that reads back as the same
float32), every identifier derived from a model string through
`sanitize_identifier`, and every model string shown to the reader through
`c_comment`. Model strings never reach C outside a comment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

_C_KEYWORDS = frozenset(
    [
        "auto",
        "break",
        "case",
        "char",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extern",
        "float",
        "for",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "typedef",
        "union",
        "unsigned",
        "void",
        "volatile",
        "while",
        "_Bool",
        "_Complex",
        "_Imaginary",
    ]
)


def c_float(x: float | np.floating) -> str:
    """Shortest C float literal that parses back to exactly the float32 value of x.

    >>> c_float(0.1), c_float(1), c_float(-0.0), c_float(3e-39), c_float(float("inf"))
    ('0.1f', '1.0f', '-0.0f', '3e-39f', 'INFINITY')
    """
    v = np.float32(x)
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    f = float(v)
    for digits in range(1, 10):
        text = f"{f:.{digits}g}"
        with np.errstate(over="ignore"):  # a too-short rounding of FLT_MAX overflows: retry
            back = np.float32(float(text))
        if back == v and math.copysign(1.0, float(text)) == math.copysign(1.0, f):
            break
    else:  # pragma: no cover - 9 significant digits always round-trip a float32
        raise AssertionError(f"no round-trip literal for {f!r}")
    if "e" in text:
        mantissa, exp = text.split("e")
        text = f"{mantissa}e{int(exp)}"
    elif "." not in text and "inf" not in text:
        text += ".0"
    return text + "f"


def c_int(x: int | np.integer) -> str:
    """Integer literal; values beyond int32 get an LL suffix."""
    v = int(x)
    if -(2**31) < v < 2**31:
        return str(v)
    return f"{v}LL"


def float_literals(values: Iterable[float]) -> list[str]:
    """c_float for a whole array, vectorized: each value gets the fewest of 6..9 significant
    digits that parse back to the same float32 (weights rarely need fewer than 6, and trying
    fewer costs more than it saves)."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
    if arr.size and not np.all(np.isfinite(arr)):
        return [c_float(v) for v in arr]
    out = np.empty(arr.size, dtype=object)
    todo = np.arange(arr.size)
    as_double = arr.astype(np.float64)
    for digits in (6, 7, 8, 9):
        if not todo.size:
            break
        text = np.array([f"{v:.{digits}g}" for v in as_double[todo].tolist()])
        ok = text.astype(np.float32) == arr[todo]
        out[todo[ok]] = text[ok]
        todo = todo[~ok]
    return [t + "f" if ("." in t or "e" in t) else t + ".0f" for t in out.tolist()]


def c_float_array(values: Iterable[float], per_line: int = 8, indent: str = "    ") -> str:
    """Comma-separated float literals, `per_line` to a line, for an array initializer."""
    return _wrap(float_literals(values), per_line, indent)


def c_int_array(values: Iterable[int], per_line: int = 16, indent: str = "    ") -> str:
    arr = np.asarray(values).reshape(-1)
    if arr.size and (arr.min() <= -(2**31) or arr.max() >= 2**31):
        return _wrap([c_int(v) for v in arr], per_line, indent)
    return _wrap([str(v) for v in arr.tolist()], per_line, indent)


def _wrap(items: list[str], per_line: int, indent: str) -> str:
    lines = [indent + ", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(lines)


def sanitize_identifier(text: str, max_len: int = 40) -> str:
    """A C identifier fragment made from an arbitrary model string: [A-Za-z0-9_] only.

    The result is never empty, never starts with a digit and is never a keyword;
    callers still prefix it and make it unique.

    >>> sanitize_identifier("conv1.weight"), sanitize_identifier("*/ evil(); /*")
    ('conv1_weight', 'evil')
    """
    s = re.sub(r"[^A-Za-z0-9_]+", "_", text)
    s = re.sub(r"_+", "_", s).strip("_")[:max_len].strip("_")
    if not s:
        s = "t"
    if s[0].isdigit():
        s = "n" + s
    if s in _C_KEYWORDS:
        s += "_"
    return s


def c_comment(text: str, max_len: int = 120) -> str:
    """Text safe inside a /* ... */ comment: one line, printable ASCII, no comment delimiters.

    >>> c_comment("a */ b /* c\\n d ??/")
    'a * / b / * c d ?\\\\?/'
    """
    s = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in str(text))
    s = re.sub(r"\s+", " ", s).strip()
    # Break the comment delimiters and trigraphs, whichever order they come in.
    while "*/" in s or "/*" in s or "??" in s:
        s = s.replace("*/", "* /").replace("/*", "/ *").replace("??", "?\\?")
    if len(s) > max_len:
        s = s[: max_len - 3] + "..."
    # A trailing backslash could splice the next line into the comment.
    return s.rstrip("\\")
