"""Data-aware factorization: the objective is the layer's output on the data, not W."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.factorize import FactorizationError, factorize
from faustgen.factorize.datafit import LayerData, data_factorize, output_error, refit_dense


def _layer(seed=0, n_in=96, n_out=48, n=800):
    """Correlated inputs with a nonzero mean (as activations are) and a random layer."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((n_in, 12)) @ rng.standard_normal((12, n_in)) / 4
    X = rng.standard_normal((n, n_in)) @ mix + 0.05 * rng.standard_normal((n, n_in)) + 0.3
    W = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    b = rng.standard_normal(n_out)
    return X, W, b


def test_output_error_from_statistics_equals_direct():
    X, W, b = _layer()
    T = X @ W.T + b
    d = LayerData.empty(X.shape[1], T.shape[1])
    d.add(X[:300], T[:300])  # accumulated in two chunks
    d.add(X[300:], T[300:])
    W2 = W + 0.1 * np.random.default_rng(1).standard_normal(W.shape)
    b2 = b + 0.2
    direct = np.linalg.norm(X @ W2.T + b2 - T) / np.linalg.norm(T)
    assert output_error(W2, b2, d) == pytest.approx(direct, rel=1e-9)
    assert output_error(W, b, d) < 1e-6


@pytest.mark.parametrize("block", [None, 8])
def test_data_fit_beats_the_weight_fit_on_the_outputs(block):
    X, W, b = _layer()
    T = X @ W.T + b
    train, held = LayerData.from_samples(X[:600], T[:600]), LayerData.from_samples(X[600:], T[600:])
    free = factorize(W, rcg=6, block=block)
    fm, bias, info = data_factorize(W, train, 6, bias=b, block=block, n_iter=60)
    assert fm.rcg >= 6 - 1e-9  # the compression guarantee is the front end's
    assert info["output_error"] == pytest.approx(output_error(fm.toarray(), bias, train))
    # On held-out samples too: a third of the data-free factors' output error or less.
    assert output_error(fm.toarray(), bias, held) < 0.34 * output_error(free.toarray(), b, held)
    # The weights themselves move away: the data never excites most directions.
    assert fm.relative_error(W) > free.relative_error(W)


def test_bias_correction_absorbs_a_shift_of_the_inputs():
    """Inputs shifted upstream (a compressed layer's mean error): the refitted bias of a
    dense layer makes the outputs exact again, which keeping the old bias cannot."""
    X, W, b = _layer(2)
    T = X @ W.T + b
    shifted = X + 2.0
    d = LayerData.from_samples(shifted, T)
    W_new, b_new = refit_dense(W, d, damping=1e-9)
    assert output_error(W_new, b_new, d) < 1e-6
    assert output_error(W, b, d) > 0.1  # ~0.19


def test_mismatched_data_is_an_error():
    X, W, _b = _layer()
    d = LayerData.from_samples(X, X @ W.T)
    with pytest.raises(FactorizationError):
        data_factorize(W.T, d, 4)
    with pytest.raises(FactorizationError):
        LayerData.empty(3, 2).centered()


def test_activation_aware_fit_lowers_the_relu_error():
    """Behind a ReLU, outputs the dense layer sends below zero only need to stay below zero:
    the relaxed refit (bounds) lowers the error of the *activations* on unseen samples, at
    the same stored entries."""
    X, W, b = _layer(3)
    T = X @ W.T + b - 0.5  # about half the outputs below zero
    train = LayerData.from_samples(X[:600], T[:600], keep=True)
    plain, b0, _ = data_factorize(W, train, 6, bias=b, n_iter=60)
    relu, b1, info = data_factorize(W, train, 6, bias=b, n_iter=60, bounds=(0.0, np.inf))
    assert relu.stored_nnz <= plain.stored_nnz
    before, after = info["activation_error"]
    assert after < 0.9 * before

    def act_err(fm, bias):
        ref = np.maximum(T[600:], 0)
        return np.linalg.norm(np.maximum(X[600:] @ fm.toarray().T + bias, 0) - ref) / (
            np.linalg.norm(ref)
        )

    assert act_err(relu, b1) < 0.9 * act_err(plain, b0)
    # Without kept samples there is nothing to relax: the plain fit.
    same, _, info2 = data_factorize(
        W, LayerData.from_samples(X[:600], T[:600]), 6, bias=b, n_iter=60, bounds=(0.0, np.inf)
    )
    assert "activation_error" not in info2
    assert np.allclose(same.toarray(), plain.toarray())
