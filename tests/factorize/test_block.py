"""``factorize(…, block=bh)`` and the block layout of results."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

from faustgen.factorize import (
    BlockStructure,
    FactorizationError,
    FactorizedMatrix,
    block_energy,
    factorize,
)
from faustgen.factorize.result import block_count

BH = 16


def trained_like(D: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = min(D, d)
    U, _ = np.linalg.qr(rng.standard_normal((D, r)))
    V, _ = np.linalg.qr(rng.standard_normal((d, r)))
    s = 1.0 / (1.0 + np.arange(r) / 20.0)
    S = (U * s) @ V.T
    return S + 0.01 * np.linalg.norm(S) / np.sqrt(D * d) * rng.standard_normal((D, d))


def block_prune_error(W: np.ndarray, budget: int, bh: int) -> float:
    e = np.sort(block_energy(W, bh).ravel())[::-1]
    return float(np.sqrt(max(1.0 - e[: budget // bh].sum() / e.sum(), 0.0)))


def check_blocks(F: FactorizedMatrix, bh: int, whole: bool = True) -> None:
    """Inner dimensions are multiples of bh, the stored count is that of the blocks holding
    a nonzero, and (``whole``) every such block is full: the stored count is the nonzero
    count plus only the padding of a short last panel. (Tiny problems can keep a block with
    an entry no gradient ever reached, an exact zero: ``whole=False`` there.)"""
    stored = 0
    for q, f in enumerate(F.factors):
        m = f.shape[0]
        if q > 0:
            assert m % bh == 0, (q, f.shape)
        bs = F.block_structure(q)
        stored += bs.stored_entries
        panel = np.repeat(np.arange(bs.n_panels), np.diff(bs.panel_ptr))
        real_rows = np.minimum(bh, m - panel * bh)
        assert f.nnz <= int(real_rows.sum())
        if whole:
            assert f.nnz == int(real_rows.sum()), q
    assert stored == F.stored_nnz


@pytest.mark.parametrize(
    ("shape", "rcg", "effort"),
    [((64, 200), 2.0, 0.2), ((200, 64), 3.0, 0.2), ((300, 784), 4.0, 0.1), ((784, 300), 8, 0.1)],
)
def test_block_rcg_is_met_and_factors_are_block_sparse(shape, rcg, effort) -> None:
    W = trained_like(*shape)
    F = factorize(W, rcg=rcg, block=BH, effort=effort)
    budget = int(W.size // rcg)
    assert F.block == BH and F.shape == shape
    assert F.stored_nnz <= budget and F.rcg >= rcg
    assert F.nnz <= F.stored_nnz
    check_blocks(F, BH)
    # Never worse than keeping the budget's largest 16 × 1 blocks of W.
    assert F.relative_error(W) <= block_prune_error(W, budget, BH) + 1e-12
    assert F.relative_error(W) == pytest.approx(F.info["relative_error"])
    assert "block-prune" in F.info["candidates"]


def test_block_beats_block_pruning_on_a_trained_like_matrix() -> None:
    W = trained_like(128, 320, seed=1)
    F = factorize(W, rcg=4, block=BH, effort=0.3)
    assert F.n_factors == 2
    assert F.relative_error(W) < block_prune_error(W, W.size // 4, BH) - 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factors": 1},
        {"factors": 3},
        {"factors": 3, "method": "palm4msa"},
        {"method": "hierarchical", "factors": 3},
        {"method": "palm4msa"},
    ],
)
def test_block_methods_and_factor_counts(kwargs) -> None:
    W = trained_like(96, 160, seed=5)
    F = factorize(W, rcg=3.0, block=BH, effort=0.2, **kwargs)
    assert F.rcg >= 3.0 and F.block == BH
    if "factors" in kwargs:
        assert F.n_factors == kwargs["factors"]
    check_blocks(F, BH)
    assert F.relative_error(W) < 1.0


@pytest.mark.parametrize("shape", [(17, 3), (5, 40), (40, 5), (33, 33)])
@pytest.mark.parametrize("factors", [None, 3])
def test_block_rcg_on_small_and_odd_shapes(shape, factors) -> None:
    W = np.random.default_rng(1).standard_normal(shape)
    for rcg in (1.0, 2.0):
        try:
            F = factorize(W, rcg=rcg, factors=factors, block=4, effort=0.1)
        except FactorizationError:
            continue  # no candidate fits (a hard guarantee, not a best effort)
        assert F.rcg >= rcg and F.block == 4
        check_blocks(F, 4, whole=False)


def test_block_max_error() -> None:
    W = trained_like(64, 160, seed=2)
    E = 0.5
    F = factorize(W, max_error=E, block=BH, effort=0.2)
    assert F.relative_error(W) <= E + 1e-12 and F.block == BH
    e = np.sort(block_energy(W, BH).ravel())
    prune_blocks = e.size - np.searchsorted(np.cumsum(e), E**2 * e.sum(), side="right")
    assert F.stored_nnz <= prune_blocks * BH
    check_blocks(F, BH)


def test_block_results_are_deterministic_bit_for_bit() -> None:
    W = trained_like(48, 112, seed=6)
    a = factorize(W, rcg=3.0, seed=7, block=BH, effort=0.2)
    b = factorize(W, rcg=3.0, seed=7, block=BH, effort=0.2)
    assert a.scale == b.scale and a.info["chosen"] == b.info["chosen"]
    for fa, fb in zip(a.factors, b.factors, strict=True):
        np.testing.assert_array_equal(fa.indptr, fb.indptr)
        np.testing.assert_array_equal(fa.indices, fb.indices)
        np.testing.assert_array_equal(fa.data, fb.data)


def test_block_argument_errors() -> None:
    W = np.ones((32, 32))
    with pytest.raises(FactorizationError, match="no block-sparse form"):
        factorize(W, rcg=2.0, method="butterfly", block=BH)
    for bad in (0, -16, 2.5, True):
        with pytest.raises(FactorizationError, match="block height"):
            factorize(W, rcg=2.0, block=bad)
    with pytest.raises(FactorizationError, match="less than one block"):
        factorize(np.ones((4, 4)), rcg=2.0, block=BH)  # 8 entries: not one 16-entry block
    with pytest.raises(FactorizationError, match="no block of 16"):
        factorize(np.ones((4, 4)), rcg=2.0, max_error=0.1, block=BH)


# --- result layout ------------------------------------------------------------------------


def _random_fm(block: int | None, seed: int = 0) -> FactorizedMatrix:
    rng = np.random.default_rng(seed)
    shapes = [(37, 32), (32, 48), (48, 21)]  # 37 rows: a short last panel
    fs = [np.where(rng.random(s) < 0.3, rng.standard_normal(s), 0.0) for s in shapes]
    return FactorizedMatrix(fs, -1.7, block=block)


@pytest.mark.parametrize("bh", [1, 4, 16, 64])
def test_block_structure_reassembles_exactly(bh) -> None:
    F = _random_fm(None)
    with pytest.raises(FactorizationError, match="bh"):
        F.block_structure(0)
    for q, f in enumerate(F.factors):
        bs = F.block_structure(q, bh)
        assert isinstance(bs, BlockStructure)
        assert bs.shape == f.shape and bs.bh == bh
        assert bs.n_panels == -(-f.shape[0] // bh) and bs.panel_ptr[0] == 0
        assert bs.panel_ptr[-1] == bs.n_blocks == len(bs.block_cols)
        assert bs.block_values.shape == (bs.n_blocks, bh)
        assert np.all(np.diff(bs.panel_ptr) >= 0)
        for p in range(bs.n_panels):  # columns ascend within a panel
            assert np.all(np.diff(bs.block_cols[bs.panel_ptr[p] : bs.panel_ptr[p + 1]]) > 0)
        np.testing.assert_array_equal(bs.toarray(), f.toarray())
        # Every block holds a nonzero; the block count is that of the nonzero blocks.
        assert np.all(np.any(bs.block_values != 0, axis=1))
        assert bs.n_blocks == np.count_nonzero(block_energy(f.toarray(), bh))
        assert block_count(f, bh) == bs.n_blocks  # the count without the layout
        # Printing the layout as a kernel would: y[panel] += values * x[col].
        x = np.random.default_rng(q).standard_normal(f.shape[1])
        y = np.zeros(bs.n_panels * bh)
        for p in range(bs.n_panels):
            for b in range(bs.panel_ptr[p], bs.panel_ptr[p + 1]):
                y[p * bh : p * bh + bh] += bs.block_values[b] * x[bs.block_cols[b]]
        np.testing.assert_allclose(y[: f.shape[0]], f @ x, rtol=1e-12, atol=1e-12)
        assert not np.any(y[f.shape[0] :])


def test_block_attribute_stored_nnz_balanced_and_astype() -> None:
    F = _random_fm(16)
    assert F.block == 16
    stored = sum(F.block_structure(q).stored_entries for q in range(3))
    assert F.stored_nnz == stored >= F.nnz
    assert F.rcg == pytest.approx(37 * 21 / stored)
    assert _random_fm(None).stored_nnz == _random_fm(None).nnz
    bal = F.balanced_factors()
    np.testing.assert_allclose((bal[0] @ bal[1] @ bal[2]).toarray(), F.toarray(), rtol=1e-12)
    for q in range(3):
        a, b = F.block_structure(q), F.block_structure(q, balanced=True)
        np.testing.assert_array_equal(a.panel_ptr, b.panel_ptr)
        np.testing.assert_array_equal(a.block_cols, b.block_cols)
        np.testing.assert_allclose(b.toarray(), bal[q].toarray(), rtol=1e-15)
        # The plain CSR list the compiler gets groups into the same blocks.
        assert FactorizedMatrix([bal[q]], block=16).block_structure(0).n_blocks == b.n_blocks
    G = F.astype(np.float32)
    assert G.block == 16 and G.block_structure(1).block_values.dtype == np.float32
    with pytest.raises(FactorizationError):
        FactorizedMatrix([np.ones((2, 2))], block=0)
    with pytest.raises(FactorizationError):
        F.block_structure(3)


@pytest.mark.parametrize("block", [None, 16])
def test_npz_round_trips_the_block_attribute(tmp_path, block) -> None:
    F = _random_fm(block, seed=3)
    path = tmp_path / "f.npz"
    F.save(path)
    with np.load(path) as z:
        assert int(z["block"]) == (block or 0)
        assert {"scale", "n_factors", "f0_data", "f2_shape"} <= set(z.files)
    G = FactorizedMatrix.load(path)
    assert G.block == block and G.stored_nnz == F.stored_nnz
    np.testing.assert_array_equal(G.toarray(), F.toarray())
    # A file from before the block key loads as unstructured.
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k != "block"}
    np.savez(tmp_path / "old.npz", **old)
    assert FactorizedMatrix.load(tmp_path / "old.npz").block is None


def test_factorized_block_result_round_trips(tmp_path) -> None:
    W = trained_like(40, 96, seed=9)
    F = factorize(W, rcg=2.0, block=8, effort=0.2)
    F.save(tmp_path / "b.npz")
    G = FactorizedMatrix.load(tmp_path / "b.npz")
    assert G.block == 8 and G.rcg >= 2.0
    for q in range(G.n_factors):
        bs = G.block_structure(q, balanced=True)
        np.testing.assert_allclose(bs.toarray(), G.balanced_factors()[q].toarray(), rtol=0, atol=0)
    assert sps.isspmatrix_csr(G.factors[0])
