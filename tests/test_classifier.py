"""Tests for ldm_np.evaluation.classifier: the loss and its gradient, the model, the digit features."""

from __future__ import annotations

import numpy as np
import pytest

from ldm_np.datasets import load_digits
from ldm_np.evaluation.classifier import DIGIT_RECIPE, Classifier, digit_feature_model, softmax_cross_entropy
from ldm_np.evaluation.metrics import frechet_distance
from ldm_np.gradcheck import TOLERANCE, check_module, numerical_gradient, rel_error


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def split(digits):
    """A fixed random split: 1,200 digits to fit on, 597 held out."""
    X, labels = digits
    order = np.random.default_rng(0).permutation(len(X))
    fit, held = order[:1200], order[1200:]
    return X[fit], labels[fit], X[held], labels[held]


# --------------------------------------------------------------------------
# softmax_cross_entropy
# --------------------------------------------------------------------------


def test_cross_entropy_value_matches_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    labels = np.array([0, 3, 1, 1, 2, 3])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probs[np.arange(6), labels]))
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(dlogits, (probs - onehot) / 6, rtol=1e-12)


def test_cross_entropy_gradient_check():
    rng = np.random.default_rng(1)
    logits = 3.0 * rng.standard_normal((5, 7))  # float64, spread so the softmax is not flat
    labels = rng.integers(0, 7, size=5)
    _, dlogits = softmax_cross_entropy(logits, labels)
    numeric = numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert rel_error(dlogits, numeric) < 1e-6  # a correct gradient lands near 1e-9


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], dtype=np.float32)
    loss, dlogits = softmax_cross_entropy(logits, np.array([0, 0]))
    # Row 0 is right with certainty (loss 0); row 1 puts its mass on two classes
    # 1e4 above the label's: loss 1e4 + log 2. The mean of the two rows:
    assert float(loss) == pytest.approx((1e4 + np.log(2.0)) / 2, rel=1e-6)
    assert np.isfinite(dlogits).all() and dlogits.dtype == np.float32
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-6)  # softmax and onehot both sum to 1


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


def test_classifier_gradients_pass_the_gradient_check():
    model = Classifier(5, 3, hidden_size=6, seed=2, dtype="float64")
    rng = np.random.default_rng(3)
    for layer in model.params.values():  # non-zero biases, so a dropped bias gradient shows
        layer["bias"][...] = 0.5 * rng.standard_normal(layer["bias"].shape)
    x = rng.standard_normal((4, 5))
    report = check_module(model, [x])
    assert report.ok, f"\n{report}"
    assert report.max_error < TOLERANCE


def test_classifier_shapes_dtypes_and_repr():
    model = Classifier(64, 10, hidden_size=16)
    x = np.random.default_rng(4).random((9, 64), dtype=np.float32)
    assert model(x).shape == (9, 10) and model(x).dtype == np.float32
    assert model.features(x).shape == (9, 16) and model.features(x).dtype == np.float32
    assert model.predict(x).shape == (9,) and model.predict(x).dtype == np.int64
    assert "Classifier(input_size=64, num_classes=10, hidden_size=16" in repr(model)
    # features are the penultimate activations: the output layer maps them to the logits.
    out = model.params["cls_output"]
    np.testing.assert_allclose(model.features(x) @ out["kernel"] + out["bias"], model(x), rtol=1e-5)


def test_backward_before_forward_is_refused():
    with pytest.raises(RuntimeError, match="before a forward"):
        Classifier(4, 2).backward(np.zeros((1, 2), dtype=np.float32))


def test_fit_is_deterministic(split):
    X, labels, _, _ = split
    a = Classifier(64, 10, hidden_size=32, seed=5).fit(X, labels, steps=30, seed=6)
    b = Classifier(64, 10, hidden_size=32, seed=5).fit(X, labels, steps=30, seed=6)
    c = Classifier(64, 10, hidden_size=32, seed=5).fit(X, labels, steps=30, seed=7)
    for layer in a.params:
        for name in a.params[layer]:
            np.testing.assert_array_equal(a.params[layer][name], b.params[layer][name])
    assert not np.array_equal(a.params["cls_dense_0"]["kernel"], c.params["cls_dense_0"]["kernel"])
    assert a.history == b.history and a.history[0][0] == 0 and a.history[-1][0] == 29


def test_digit_recipe_generalises_to_held_out_digits(split):
    X_fit, y_fit, X_held, y_held = split
    recipe = dict(DIGIT_RECIPE)
    model = Classifier(64, 10, hidden_size=recipe.pop("hidden_size"), seed=0)
    model.fit(X_fit, y_fit, seed=0, **recipe)
    accuracy = model.accuracy(X_held, y_held)
    assert accuracy >= 0.95, accuracy  # measured 0.98 on this split


def test_bad_inputs_raise_errors_that_name_the_argument():
    model = Classifier(4, 3)
    x = np.zeros((5, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="X must have shape"):
        model.features(np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        model.accuracy(x, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="labels must have shape"):
        model.fit(x, np.array([0, 1]), steps=1)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        model.fit(x, np.zeros(5), steps=1)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        Classifier(4, 1)


# --------------------------------------------------------------------------
# The digit feature model
# --------------------------------------------------------------------------


def test_digit_feature_model_is_cached_and_fits_the_digits(digits):
    X, labels = digits
    model = digit_feature_model()
    assert digit_feature_model() is model
    assert model.features(X).shape == (1797, DIGIT_RECIPE["hidden_size"])
    assert model.accuracy(X, labels) > 0.99  # it has seen every digit


def test_feature_space_separates_the_data_from_degraded_digits(digits):
    """The FD floor (two halves of the data) is far below the FD of blurred digits or noise."""
    X, _ = digits
    model = digit_feature_model()
    order = np.random.default_rng(1).permutation(len(X))
    half_a, half_b = X[order[:898]], X[order[898:]]
    floor = frechet_distance(model.features(half_a), model.features(half_b))
    images = half_b.reshape(-1, 8, 8)
    blurred = (
        images
        + np.roll(images, 1, 1)
        + np.roll(images, -1, 1)
        + np.roll(images, 1, 2)
        + np.roll(images, -1, 2)
    ) / 5
    noise = np.random.default_rng(2).random(half_b.shape, dtype=np.float32)
    fd_blur = frechet_distance(model.features(half_a), model.features(blurred.reshape(-1, 64)))
    fd_noise = frechet_distance(model.features(half_a), model.features(noise))
    assert 0.0 < floor < 2.0, floor  # measured about 1.0
    assert fd_blur > 10 * floor and fd_noise > fd_blur, (floor, fd_blur, fd_noise)
