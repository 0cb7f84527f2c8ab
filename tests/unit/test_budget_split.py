"""The whole-model budget split of data-aware builds (faustgen/tune/split.py)."""

from __future__ import annotations

import pytest

from faustgen.tune.split import MARGIN, allocate, pareto_split, spend_leftover


def test_pareto_split_least_error_within_budget_returns_choices():
    a = [(100, 0.0, 1.0, 16), (30, 0.2, 4.0, 16), (20, 0.1, 4.0, None)]
    b = [(50, 0.0, 1.0, 16), (10, 0.3, 5.0, 16)]
    assert pareto_split([a, b], 70) == ((4.0, None), (1.0, 16))
    assert pareto_split([a, b], 30) == ((4.0, None), (5.0, 16))
    assert pareto_split([a, b], 20) is None


def _params(chosen, sizes):
    return sum(w / r if r > 1.0 else w for n, r in chosen.items() for w in [sizes[n][0]]) + sum(
        b for _, b in sizes.values()
    )


def test_spend_leftover_meets_the_budget_and_respects_floors():
    sizes = {"a": (10000, 100), "b": (2000, 50), "c": (500, 10)}
    chosen = {"a": 16.0, "b": 8.0, "c": 1.0}
    budget = 2500
    spend_leftover(chosen, sizes, budget, {"b": 6.0})
    assert _params(chosen, sizes) == pytest.approx(budget, rel=1e-6)
    assert chosen["c"] == 1.0  # a dense layer stays dense
    assert chosen["b"] == pytest.approx(6.0 * MARGIN)  # pinned at its floor...
    assert chosen["a"] < 16.0  # ...the rest went to the other layer
    # Without floors both layers' RCGs are lowered by the same factor.
    free = {"a": 16.0, "b": 8.0, "c": 1.0}
    spend_leftover(free, sizes, budget, {})
    assert free["a"] / free["b"] == pytest.approx(2.0)
    assert _params(free, sizes) == pytest.approx(budget, rel=1e-6)
    # Nothing to spare: nothing changes.
    tight = {"a": 16.0, "b": 8.0, "c": 1.0}
    spend_leftover(tight, sizes, 1000, {})
    assert tight == {"a": 16.0, "b": 8.0, "c": 1.0}


def test_allocate_interpolates_between_rungs_and_picks_structures():
    # Layer a: 16x1 blocks or a better-fitting "8" structure; layer b: one structure whose
    # error falls fast with parameters. Rungs at 1000 / 500 / 250 parameters.
    a = [(2000, 0.0, 1.0, 16)]
    a += [(c, e, r, 16) for c, e, r in ((1000, 0.02, 2.0), (500, 0.08, 4.0), (250, 0.3, 8.0))]
    a += [(c, e, r, 8) for c, e, r in ((1000, 0.01, 2.0), (500, 0.04, 4.0), (250, 0.2, 8.0))]
    b = [(1000, 0.0, 1.0, 16), (500, 0.01, 2.0, 16), (250, 0.2, 4.0, 16)]
    pick = allocate([a, b], 1100)
    (ra, sa), (rb, sb) = pick
    assert sa == 8 and sb == 16  # the better-fitting structure for a
    # Between the rungs: b, whose error rises steeply below 500, keeps about 500 (steps of
    # budget / 400); a takes the rest, its RCG between the 500- and 1000-parameter rungs.
    assert rb == pytest.approx(2.0, rel=0.03)
    assert 2.0 < ra < 4.0
    # Nothing fits: None (the caller keeps the Pareto split's error).
    assert allocate([a, b], 400) is None
    # A roomy budget keeps layers dense where that is the least error.
    assert allocate([a, b], 3000) == [(1.0, 16), (1.0, 16)]
