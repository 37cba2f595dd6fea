"""Numerical parity with torchvision's Swin3D (random weights, no downloads).

The state dict goes through `keras_vswin.convert.load_state_dict`, the converter's mapping.
"""

import keras
import numpy as np
import pytest

import keras_vswin
from keras_vswin.convert import load_state_dict

torch = pytest.importorskip("torch")
video = pytest.importorskip("torchvision.models.video")

TOLERANCE = 2e-5
# (batch, frames, height, width): aligned, padding on every axis, clips shorter than the window
# (effective window clipped, shift dropped), a single token frame, odd sizes everywhere.
SHAPES = [(1, 10, 100, 130), (2, 16, 64, 64), (1, 4, 32, 48), (1, 1, 20, 20), (1, 17, 37, 59)]
VARIANTS = {
    "swin3d_t": keras_vswin.VideoSwinT,
    "swin3d_s": keras_vswin.VideoSwinS,
    "swin3d_b": keras_vswin.VideoSwinB,
}


def _torch_stage_outputs(model, x):
    """torchvision's per-stage outputs (channels-last), before each patch merging."""
    outs = []
    with torch.no_grad():
        h = model.patch_embed(x)
        for i, layer in enumerate(model.features):
            h = layer(h)
            if i % 2 == 0:
                outs.append(h.numpy())
        logits = model.head(model.avgpool(model.norm(h).permute(0, 4, 1, 2, 3)).flatten(1))
    return outs, logits.numpy()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request):
    torch.manual_seed(0)
    reference = getattr(video, request.param)(weights=None).eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    ours = VARIANTS[request.param](classifier_activation=None)
    report = load_state_dict(ours, state)
    depths = keras_vswin.VARIANTS[request.param[-1].upper()]["depths"]
    assert report.ok and report.checked_index == sum(depths)
    assert len(report.loaded) == len(ours.weights)
    stages = [ours.get_layer(f"stage{i}_block{d - 1}").output for i, d in enumerate(depths)]
    return request.param, reference, keras.Model(ours.input, [*stages, ours.output])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_logits_and_stages_match_torchvision(pair, shape):
    name, reference, probe = pair
    x = np.random.default_rng(1).standard_normal((*shape, 3)).astype("float32")
    ref_stages, ref_logits = _torch_stage_outputs(
        reference, torch.from_numpy(x).permute(0, 4, 1, 2, 3)
    )
    *stages, logits = (np.asarray(t) for t in probe(x))
    for i, (got, want) in enumerate(zip(stages, ref_stages)):
        assert got.shape == want.shape, f"{name} stage {i}"
        diff = np.abs(got - want).max()
        assert diff <= 1e-4 * max(1.0, np.abs(want).max()), f"{name} diverges at stage {i}: {diff}"
    assert logits.shape == ref_logits.shape
    assert np.abs(logits - ref_logits).max() <= TOLERANCE, name
