"""The synthetic moving-shapes dataset and the `make demo` job (`training.demo`)."""

import numpy as np
import pytest

from keras_vswin.data import synthetic


@pytest.mark.parametrize("size", [16, 32, 64])
def test_every_class_renders_inside_frames_of_any_allowed_size(size):
    videos, labels = synthetic.generate_arrays(3, num_frames=8, size=size, seed=0)
    assert videos.shape == (3 * len(synthetic.CLASSES), 8, size, size, 3)
    assert np.bincount(labels).tolist() == [3] * len(synthetic.CLASSES)
    # Every video has its shapes (bright pixels) in every frame.
    assert (videos.max(axis=(2, 3, 4)) >= 150).all()


def test_pairs_are_time_reversals_of_each_other():
    for name, (forward, reverse) in synthetic._PAIRS.items():
        video = synthetic.render_video(name, np.random.default_rng(5), num_frames=10, size=32)
        original = synthetic.render_video(forward, np.random.default_rng(5), num_frames=10, size=32)
        np.testing.assert_array_equal(video, original[::-1] if reverse else original)
