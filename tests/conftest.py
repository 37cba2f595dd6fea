"""Shared test setup: quiet TensorFlow, TensorFlow backend, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# torch must be loaded before TensorFlow: the other order crashes torchvision's import
# (conflicting bundled native libraries). Tests that need torch still importorskip it.
try:
    import torch  # noqa: F401, E402
    import torchvision  # noqa: F401, E402
except ImportError:
    pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_global_tensorflow_seed():
    """Tests that call `keras.utils.set_random_seed` leave TensorFlow's global seed set, and a
    global seed changes how tf.data ops take their seeds: every test starts without one, so the
    suite passes in any order."""
    yield
    import sys

    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(None)
