"""`faustgen demo`, the README's first command, on its smallest setting: the MLP trained one
epoch on a subset, built dense and factorized, verified, timed, and cross-built for the Pi."""

from __future__ import annotations

import math
import re

import pytest

from faustgen.demo.job import run_demo

pytest.importorskip("torch")


def test_demo_quick_mlp(tmp_path, capsys):
    rows = run_demo(
        tmp_path / "demo", quick=True, progress=False, rcgs=(8.0,), experiment_rcgs=(),
        models=("mlp",),
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert [r.build for r in rows] == ["dense C", "factorized RCG 8"]
    dense, fact = rows
    assert dense.params == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert dense.accuracy > 0.6  # one epoch on 3000 images; chance is 0.1
    assert fact.rcg >= 8.0 * 0.995 and fact.params <= dense.params / (8.0 * 0.995)
    assert fact.accuracy >= dense.accuracy - 0.05
    for r in rows:
        assert all(math.isfinite(t) and t > 0 for t in (r.us, r.ort_us, r.torch_us))
    number = r"(?:torch|ORT|factors) ([0-9.]+e[+-][0-9]+)"
    errors = [float(e) for e in re.findall(number, dense.check + " " + fact.check)]
    assert len(errors) == 3 and max(errors) < 1e-5
    assert "MLP 784-300-100-10  factorized RCG 8" in printed
    # The Pi rows cross-build the host's factors: they compute what the host C computes.
    for m in re.finditer(r"\[(rpi64|rpi)\]: (.*)", printed):
        if "skipped" in m.group(2):
            continue
        err = re.search(r"max rel. error vs its factor product (\S+);", m.group(2))
        assert err and float(err.group(1)) < 1e-5, m.group(0)
