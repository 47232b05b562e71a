"""The encoder's directions (conr.encoders.directions), against the Hellinger map by hand."""
import numpy as np
import torch

from conr.encoders.directions import feature_directions


def test_non_negative_rows_map_to_the_root_of_their_histogram():
    # sqrt(x) / ||sqrt(x)|| == sqrt(x / sum(x)): a row read as a histogram, its Hellinger point
    rng = np.random.default_rng(0)
    x = rng.gamma(0.5, 2.0, size=(50, 30)).astype(np.float32)
    expected = np.sqrt(x / x.sum(1, keepdims=True))
    got = feature_directions(x)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # a channel 100 times the rest weighs 10 times, not 100
    row = np.array([[100.0, 1.0, 1.0]], dtype=np.float32)
    out = feature_directions(row)[0]
    assert abs(out[0] / out[1] - 10.0) < 1e-4


def test_rows_with_a_negative_value_are_only_made_unit():
    x = torch.tensor([[3.0, -4.0], [0.0, 2.0]])
    got = feature_directions(x)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, torch.tensor([[0.6, -0.8], [0.0, 1.0]]))
