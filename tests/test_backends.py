"""The layers use only keras.ops: the same weights give the same outputs on the PyTorch backend."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_vswin

pytest.importorskip("torch")

CONFIG = dict(
    embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), classes=5,
    classifier_activation=None, drop_path_rate=0.0,
)  # fmt: skip


def test_torch_backend_matches_tensorflow(tmp_path):
    model = keras_vswin.VideoSwin(**CONFIG)
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)
    # Padding, clipped windows and shifted windows all occur at this size.
    x = np.random.default_rng(0).standard_normal((2, 5, 30, 41, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, keras_vswin
        assert keras.backend.backend() == "torch"
        model = keras_vswin.VideoSwin(**{CONFIG!r}, weights={str(weights)!r})
        out = model(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "out.npy")!r}, keras.ops.convert_to_numpy(out))
        # Training uses a hand-written attention gradient (keras.ops.custom_gradient); with no
        # dropout it must equal the gradient torch derives for the inference forward.
        import torch
        model = keras_vswin.VideoSwin(**{CONFIG!r}, head_dropout_rate=0.0)
        x = torch.tensor(np.load({str(tmp_path / "x.npy")!r}))
        grads = []
        for training in (True, False):
            loss = (model(x, training=training) * torch.arange(5.0)).sum()
            grads.append(torch.autograd.grad(loss, [w.value for w in model.trainable_weights]))
        for a, b in zip(*grads):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.asarray(model(x)), atol=1e-5)
