"""The layers use only keras.ops: the same weights give the same outputs on the PyTorch and JAX
backends as on TensorFlow, and training (with the hand-written attention gradient) runs there.

Each backend runs in its own process (Keras picks its backend once, at import).
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras_vswin

CONFIG = dict(
    embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), classes=5,
    classifier_activation=None, drop_path_rate=0.0,
)  # fmt: skip

# Per backend, source defining `gradients(model, x, training)`: the gradients of a fixed loss of
# the logits with respect to the trainable weights, as NumPy arrays.
GRADIENTS = {
    "torch": """
        import numpy as np, torch

        def gradients(model, x, training):
            loss = (model(torch.tensor(x), training=training) * torch.arange(5.0)).sum()
            weights = [w.value for w in model.trainable_weights]
            return [g.numpy() for g in torch.autograd.grad(loss, weights)]
        """,
    "jax": """
        import jax, keras, numpy as np

        def gradients(model, x, training):
            # jit-compiled, as model.fit runs it: the attention mask reaches the custom
            # gradient as a closed-over tracer.
            def loss(trainable, non_trainable):
                out, _ = model.stateless_call(trainable, non_trainable, x, training=training)
                return (out * keras.ops.arange(5.0)).sum()

            grad = jax.jit(jax.grad(loss))(
                [w.value for w in model.trainable_weights],
                [w.value for w in model.non_trainable_weights],
            )
            return [np.asarray(g) for g in grad]
        """,
}


ROOT = Path(__file__).resolve().parents[1]  # this checkout, whose keras_vswin the script imports


def _run_on(backend, script, tmp_path):
    """Run `script` (Python source) in `tmp_path` in a process on the Keras `backend`."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (the test extras include it)")
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.parametrize("backend", sorted(GRADIENTS))
def test_backend_matches_tensorflow(tmp_path, backend):
    model = keras_vswin.VideoSwin(**CONFIG)
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)
    # Padding, clipped windows and shifted windows all occur at this size.
    x = np.random.default_rng(0).standard_normal((2, 5, 30, 41, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = f"""
        import numpy as np, keras, keras_vswin
        assert keras.backend.backend() == {backend!r}
        model = keras_vswin.VideoSwin(**{CONFIG!r}, weights={str(weights)!r})
        x = np.load("x.npy")
        np.save("out.npy", keras.ops.convert_to_numpy(model(x)))

        # Training uses a hand-written attention gradient (keras.ops.custom_gradient); with no
        # dropout it must equal the gradient the backend derives for the inference forward.
        calls = []
        short = keras_vswin.WindowAttention3D._attend_with_short_gradient
        keras_vswin.WindowAttention3D._attend_with_short_gradient = (
            lambda *a: calls.append(1) or short(*a)
        )
        keras.utils.set_random_seed(1)
        model = keras_vswin.VideoSwin(**{CONFIG!r}, head_dropout_rate=0.0)
        trained = gradients(model, x, True)
        assert len(calls) == {sum(CONFIG["depths"])}, calls  # every block's attention took it
        inferred = gradients(model, x, False)
        assert len(calls) == {sum(CONFIG["depths"])}, calls
        for a, b, w in zip(trained, inferred, model.trainable_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=w.path)
        # With remat the backward pass recomputes the blocks (and the custom gradient) alike.
        keras.utils.set_random_seed(1)
        model = keras_vswin.VideoSwin(**{CONFIG!r}, head_dropout_rate=0.0, remat=True)
        for a, b in zip(gradients(model, x, True), trained, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        """
    _run_on(backend, textwrap.dedent(GRADIENTS[backend]) + textwrap.dedent(script), tmp_path)
    diff = np.abs(np.load(tmp_path / "out.npy") - np.asarray(model(x))).max()
    assert diff <= 1e-5, f"{backend} logits differ from TensorFlow's by {diff}"


def test_fit_runs_on_jax(tmp_path):
    script = f"""
        import numpy as np, keras, keras_vswin
        assert keras.backend.backend() == "jax"
        keras.utils.set_random_seed(0)
        config = {{**{CONFIG!r}, "drop_path_rate": 0.2}}
        model = keras_vswin.VideoSwin(**config, head_dropout_rate=0.0, remat=True)
        model.compile(
            optimizer=keras.optimizers.AdamW(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        rng = np.random.default_rng(0)
        x = rng.standard_normal((6, 4, 24, 24, 3)).astype("float32")
        y = np.array([0, 1, 2, 3, 4, 0])
        losses = model.fit(x, y, epochs=10, batch_size=3, verbose=0).history["loss"]
        assert losses[-1] < 0.5 * losses[0], losses
        # The trained weights are real arrays that the TensorFlow backend loads.
        model.save_weights("fitted.weights.h5")
        np.save("x.npy", x[:2])
        np.save("out.npy", keras.ops.convert_to_numpy(model(x[:2])))
        """
    _run_on("jax", textwrap.dedent(script), tmp_path)
    fitted = keras_vswin.VideoSwin(**CONFIG, weights=str(tmp_path / "fitted.weights.h5"))
    np.testing.assert_allclose(
        np.asarray(fitted(np.load(tmp_path / "x.npy"))), np.load(tmp_path / "out.npy"), atol=1e-5
    )
