"""FactorizedMatrix: products, persistence and scale folding."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

from faustgen.factorize import FactorizationError, FactorizedMatrix


def _random_fm(seed: int = 0, scale: float = -2.5) -> FactorizedMatrix:
    rng = np.random.default_rng(seed)
    shapes = [(7, 5), (5, 9), (9, 4)]
    fs = [np.where(rng.random(s) < 0.4, rng.standard_normal(s), 0.0) for s in shapes]
    return FactorizedMatrix(fs, scale)


def test_basic_properties() -> None:
    F = _random_fm()
    dense = F.scale * F.factors[0].toarray() @ F.factors[1].toarray() @ F.factors[2].toarray()
    np.testing.assert_allclose(F.toarray(), dense, rtol=1e-12, atol=1e-14)
    assert F.shape == (7, 4)
    assert F.n_factors == 3
    assert F.nnz == sum(f.nnz for f in F.factors)
    assert F.rcg == pytest.approx(28 / F.nnz)
    assert all(sps.isspmatrix_csr(f) for f in F.factors)
    assert F.relative_error(F.toarray()) == pytest.approx(0.0, abs=1e-15)
    W = F.toarray() + 0.1
    assert F.relative_error(W) == pytest.approx(np.linalg.norm(W - F.toarray()) / np.linalg.norm(W))


@pytest.mark.parametrize("operand", ["vector", "matrix"])
def test_matvec_matches_dense_and_scipy(operand: str) -> None:
    F = _random_fm(1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(4) if operand == "vector" else rng.standard_normal((4, 3))
    expected = F.toarray() @ x
    np.testing.assert_allclose(F.matvec(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F @ x, expected, rtol=1e-12, atol=1e-12)
    prod = F.scale * (F.factors[0] @ (F.factors[1] @ (F.factors[2] @ x)))
    np.testing.assert_allclose(F.matvec(x), prod, rtol=1e-12, atol=1e-12)
    assert F.matvec(x).shape == expected.shape
    with pytest.raises(FactorizationError):
        F.matvec(np.ones(5))


def test_npz_round_trip_and_exact_keys(tmp_path) -> None:
    F = _random_fm(3)
    path = tmp_path / "f.npz"
    F.save(path)
    with np.load(path) as z:
        keys = set(z.files)
        assert float(z["scale"]) == F.scale
        assert int(z["n_factors"]) == 3
    expected = {"scale", "n_factors", "block"} | {
        f"f{q}_{part}" for q in range(3) for part in ("data", "indices", "indptr", "shape")
    }
    assert keys == expected
    G = FactorizedMatrix.load(path)
    assert G.scale == F.scale and G.n_factors == F.n_factors
    for a, b in zip(F.factors, G.factors, strict=True):
        assert a.shape == b.shape and (a != b).nnz == 0
    np.testing.assert_array_equal(G.toarray(), F.toarray())
    # Leftmost factor first: W ≈ scale · f0 @ f1 @ f2 straight from the file's arrays.
    with np.load(path) as z:
        fs = [
            sps.csr_matrix(
                (z[f"f{q}_data"], z[f"f{q}_indices"], z[f"f{q}_indptr"]), shape=z[f"f{q}_shape"]
            )
            for q in range(3)
        ]
        np.testing.assert_allclose(
            float(z["scale"]) * (fs[0] @ fs[1] @ fs[2]).toarray(), F.toarray(), rtol=1e-12
        )
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_load_rejects_garbage(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.ones(3))
    with pytest.raises(FactorizationError):
        FactorizedMatrix.load(bad)


@pytest.mark.parametrize("scale", [8.0, -8.0, 0.37])
def test_balanced_factors(scale: float) -> None:
    F = _random_fm(4, scale)
    bal = F.balanced_factors()
    np.testing.assert_allclose((bal[0] @ bal[1] @ bal[2]).toarray(), F.toarray(), rtol=1e-12)
    mag = abs(scale) ** (1 / 3)
    for q, (a, b) in enumerate(zip(F.factors, bal, strict=True)):
        sign = -1.0 if (scale < 0 and q == 0) else 1.0
        np.testing.assert_allclose(b.toarray(), sign * mag * a.toarray(), rtol=1e-12)


def test_astype_and_shape_checks() -> None:
    F = _random_fm(5)
    G = F.astype(np.float32)
    assert all(f.dtype == np.float32 for f in G.factors)
    np.testing.assert_allclose(G.toarray(), F.toarray(), rtol=1e-5, atol=1e-6)
    with pytest.raises(FactorizationError):
        FactorizedMatrix([np.ones((2, 3)), np.ones((2, 3))])
    with pytest.raises(FactorizationError):
        FactorizedMatrix([])
