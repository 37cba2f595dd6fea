"""The synthetic moving-shapes dataset and the `make demo` job (`training.demo`)."""

import math

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


def test_clock_hands_sweep_over_the_top_of_their_dial():
    rng = np.random.default_rng(0)
    for _ in range(50):
        centres, lengths, angles = synthetic._forward_trajectory("rotating_clockwise", rng, 20, 32)
        assert (np.diff(angles) > 0).all()  # clockwise on screen (y points down)
        # Tips stay above their pivots: sin(angle) < 0, the tips move right at the top.
        assert (angles > -math.pi).all() and (angles < 0).all()
        tips = centres + lengths[:, None] * np.stack([np.sin(angles), np.cos(angles)], axis=1)
        assert tips[-1, 1] > tips[0, 1]
        assert (tips >= 0).all() and (tips <= 32).all()
