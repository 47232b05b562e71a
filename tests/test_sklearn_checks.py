"""conr.CoNR against scikit-learn's own estimator checks, with tiny training (2 epochs)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import conr
from conr.estimator import NotFittedError

K1 = ("scikit-learn sets n_clusters=1 for this check; CoNR refuses K < 2 (its boundary filter compares "
      "the distance to a sample's own centre with the distance to the next one); the same property is "
      "tested with K=3 in tests/test_sklearn_checks.py")
EXPECTED_FAILED = {
    "check_dont_overwrite_parameters": K1,
    "check_methods_subset_invariance": K1,
    "check_fit2d_1feature": K1,
    "check_fit2d_predict1d": K1,
}


def tiny(**kw):
    return conr.CoNR(n_clusters=3, epochs=2, batch_size=16, device="cpu", **kw)


@pytest.mark.slow  # scikit-learn's estimator checks: ~50 fits
@parametrize_with_checks([tiny()], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# ------------------------------------------------ the K=1 checks' properties, with K=3

def _blobs(n=30, d=4, seed=0):
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=n, n_features=d, centers=3, random_state=seed)
    return X, y


def test_subset_invariance_k3():
    X, _ = _blobs()
    est = tiny().fit(X)
    full_t, full_p = est.transform(X), est.predict(X)
    parts_t = np.concatenate([est.transform(X[i:i + 7]) for i in range(0, len(X), 7)])
    parts_p = np.concatenate([est.predict(X[i:i + 7]) for i in range(0, len(X), 7)])
    np.testing.assert_allclose(parts_t, full_t, atol=1e-6)
    np.testing.assert_array_equal(parts_p, full_p)


def test_fit_sets_only_trailing_underscore_attributes_k3():
    X, _ = _blobs()
    est = tiny()
    before = dict(vars(est))
    est.fit(X)
    public_new = [a for a in vars(est) if a not in before and not a.startswith("_") and not a.endswith("_")]
    assert public_new == []
    assert {k: vars(est)[k] for k in before} == before


def test_one_feature_and_1d_predict_k3():
    X, _ = _blobs(d=1)
    est = tiny().fit(X)
    assert est.n_features_in_ == 1 and est.input_kind_ == "vectors"
    with pytest.raises(ValueError, match="Expected 2D array"):
        est.predict(X[:, 0])
    with pytest.raises(ValueError, match="X has 2 features, but CoNR is expecting 1 features"):
        est.predict(np.hstack([X, X]))


# ------------------------------------------------ the messages users meet

def test_not_fitted_is_sklearns():
    est = tiny()
    with pytest.raises(SklearnNotFittedError):
        est.predict(np.zeros((3, 4)))
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(est)
    assert issubclass(NotFittedError, SklearnNotFittedError)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_sparse_input_says_so():
    import scipy.sparse as sp

    with pytest.raises(TypeError, match="sparse input is not supported"):
        tiny().fit(sp.random(20, 5, density=0.5, format="csr", random_state=0))


@pytest.mark.parametrize("bad, pattern", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_nan_inf_messages(bad, pattern):
    X, _ = _blobs()
    X[3, 1] = bad
    with pytest.raises(ValueError, match=pattern):
        tiny().fit(X)


def test_empty_and_complex_messages():
    with pytest.raises(ValueError, match="0 sample"):
        tiny().fit(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="0 feature"):
        tiny().fit(np.zeros((12, 0)))
    with pytest.raises(ValueError, match="Complex data not supported"):
        tiny().fit(np.ones((12, 4)) + 1j)
