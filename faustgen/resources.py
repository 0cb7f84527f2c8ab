"""Locate the data shipped with faustgen: templates, runtime C files, target files.

In a wheel they sit in faustgen/_data/ (copied there by setup.py); in a source
checkout or an editable install they are the top-level folders of the repo.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PKG = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """Path of the shipped folder `name` (templates, runtime_c or targets)."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"faustgen data folder '{name}' is missing from the installation")
