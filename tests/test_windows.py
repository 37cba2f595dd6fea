"""Window geometry against hand-computed cases."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vswin import windows as win


@pytest.mark.parametrize(
    "extent, expected",
    [
        ((16, 56, 56), ((8, 7, 7), (4, 3, 3))),
        ((8, 7, 7), ((8, 7, 7), (0, 0, 0))),  # "<=": an extent equal to the window is clipped
        ((9, 8, 8), ((8, 7, 7), (4, 3, 3))),
        ((5, 10, 7), ((5, 7, 7), (0, 3, 0))),
        ((1, 1, 1), ((1, 1, 1), (0, 0, 0))),
    ],
)
def test_effective_window(extent, expected):
    assert win.effective_window(extent, (8, 7, 7), (4, 3, 3)) == expected


def test_effective_window_unshifted_block_keeps_zero_shift():
    assert win.effective_window((16, 56, 56), (8, 7, 7), (0, 0, 0)) == ((8, 7, 7), (0, 0, 0))


def test_dynamic_effective_window_matches_static():
    for extent in [(16, 56, 56), (8, 7, 7), (5, 10, 7), (1, 1, 1)]:
        window, shift = win.dynamic_effective_window(
            [tf.constant(e) for e in extent], (8, 7, 7), (4, 3, 3)
        )
        got = (tuple(int(w) for w in window), tuple(int(s) for s in shift))
        assert got == win.effective_window(extent, (8, 7, 7), (4, 3, 3))


def test_padded_extent():
    assert win.padded_extent((5, 10, 7), (5, 7, 7)) == (5, 14, 7)
    assert win.padded_extent((16, 56, 56), (8, 7, 7)) == (16, 56, 56)


def test_partition_order_by_hand():
    # One clip 2x2x4 with one channel holding the token's flat position.
    x = np.arange(16, dtype="float32").reshape(1, 2, 2, 4, 1)
    windows = np.asarray(win.window_partition(x, (1, 2, 2)))[..., 0]
    # Windows ordered (d, h, w); tokens row-major inside a window.
    expected = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    np.testing.assert_array_equal(windows, expected)
    np.testing.assert_array_equal(win.numpy_window_partition(x, (1, 2, 2))[..., 0], expected)


def test_partition_reverse_round_trip(rng):
    x = rng.standard_normal((2, 4, 6, 9, 5)).astype("float32")
    windows = win.window_partition(x, (2, 3, 3))
    assert tuple(windows.shape) == (2 * 2 * 2 * 3, 18, 5)
    back = win.window_reverse(windows, (2, 3, 3), (4, 6, 9))
    np.testing.assert_array_equal(np.asarray(back), x)


def test_axis_regions_by_hand():
    # Padded extent 6, window 3, shift 1: slices [0:-3], [-3:-1], [-1:].
    np.testing.assert_array_equal(win._axis_regions(6, 3, 1), [0, 0, 0, 1, 1, 2])
    # An unshifted axis is a single region.
    np.testing.assert_array_equal(win._axis_regions(6, 3, 0), [0] * 6)


def _official_style_ids(padded, window, shift):
    """Independent reference: the slice-assignment loop described in the paper's code."""
    img = np.zeros(padded, dtype="int32")
    count = 0
    slices = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
    for d in slices[0]:
        for h in slices[1]:
            for w in slices[2]:
                img[d, h, w] = count
                count += 1
    return win.numpy_window_partition(img[None, ..., None], window)[..., 0]


@pytest.mark.parametrize(
    "padded, window, shift",
    [
        ((4, 6, 6), (2, 3, 3), (1, 1, 1)),
        ((16, 14, 14), (8, 7, 7), (4, 3, 3)),
        ((4, 6, 6), (2, 3, 3), (0, 1, 1)),
    ],
)
def test_region_ids_partition_like_reference(padded, window, shift):
    ids = win.region_ids(padded, window, shift)
    ref = _official_style_ids(padded, window, shift)
    # Same partition of tokens into regions (the ids themselves may be numbered differently).
    same = ids[:, :, None] == ids[:, None, :]
    np.testing.assert_array_equal(same, ref[:, :, None] == ref[:, None, :])


def test_shift_mask_values():
    mask = win.shift_mask((4, 4, 4), (2, 2, 2), (1, 1, 1))
    assert mask.shape == (8, 8, 8)
    # The first window lies inside region (0, 0, 0): nothing masked.
    assert not mask[0].any()
    # The last window mixes all 8 regions: a token sees only itself.
    np.testing.assert_array_equal(mask[-1] == 0, np.eye(8, dtype=bool))
    assert set(np.unique(mask)) == {0.0, -100.0}


def test_dynamic_region_ids_match_static():
    padded, window, shift = (4, 6, 6), (2, 3, 3), (1, 1, 1)
    ids = win.dynamic_region_ids(
        [tf.constant(p) for p in padded],
        [tf.constant(w) for w in window],
        [tf.constant(s) for s in shift],
    )
    np.testing.assert_array_equal(np.asarray(ids), win.region_ids(padded, window, shift))


def test_relative_position_index_by_hand():
    # Window (1, 1, 2): rows = 1*1*3; offset -1 -> 0, 0 -> 1, +1 -> 2.
    np.testing.assert_array_equal(win.relative_position_index((1, 1, 2)), [[1, 0], [2, 1]])
    index = win.relative_position_index((8, 7, 7))
    assert index.shape == (392, 392)
    assert index.min() == 0 and index.max() == win.bias_table_size((8, 7, 7)) - 1 == 2534
    # The diagonal (zero offset) is the table's centre row.
    assert set(np.diag(index)) == {7 * 13 * 13 + 6 * 13 + 6}
    assert win.bias_table_size((16, 7, 7)) == 5239


@pytest.mark.parametrize("window", [(8, 7, 7), (2, 3, 4), (3, 1, 2), (1, 1, 1)])
def test_relative_position_factors_rebuild_the_index(window):
    plane_index, width_index = win.relative_position_factors(window)
    planes, ww = window[0] * window[1], window[2]
    plane_index = plane_index.reshape(planes, planes)
    # Token t = plane * ww + w; the table row is plane row * (2ww - 1) + width offset.
    rebuilt = plane_index[:, None, :, None] * (2 * ww - 1) + width_index[None, :, None, :]
    expected = win.relative_position_index(window)
    np.testing.assert_array_equal(rebuilt.reshape(expected.shape), expected)


@pytest.mark.parametrize("window", [(2, 3, 3), (1, 2, 1), (4, 6, 9)])
def test_partition_matches_reference_with_static_and_run_time_shapes(rng, window):
    # Batch > 1, channels > 1 and several windows on every axis: the partition merges batch
    # with depth blocks and width with channels, which only these cases exercise.
    x = rng.standard_normal((3, 4, 6, 9, 5)).astype("float32")
    expected = win.numpy_window_partition(x, window)
    np.testing.assert_array_equal(np.asarray(win.window_partition(x, window)), expected)
    run_time = tf.function(
        lambda x: win.window_reverse(
            win.window_partition(x, window), window, tf.unstack(tf.shape(x)[1:4])
        ),
        input_signature=[tf.TensorSpec([None, None, None, None, 5], tf.float32)],
    )
    np.testing.assert_array_equal(run_time(x).numpy(), x)
    partition = tf.function(
        lambda x: win.window_partition(x, window),
        input_signature=[tf.TensorSpec([None, None, None, None, 5], tf.float32)],
    )
    np.testing.assert_array_equal(partition(x).numpy(), expected)
