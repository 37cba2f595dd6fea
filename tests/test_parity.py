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


# Static input shapes take another path: with logits above `ATTENTION_CHUNK_BYTES` the attention
# runs in window chunks (forced here with a small limit, batch > 1 included).
STATIC_CASES = [
    ((2, 16, 64, 64), 2**20),
    ((1, 10, 100, 130), 2**20),
    ((1, 8, 112, 112), None),
    ((1, 8, 112, 112), 2**20),
]


@pytest.mark.parametrize(
    "shape,chunk_bytes",
    STATIC_CASES,
    ids=[f"{'x'.join(map(str, s))}-{'chunked' if c else 'whole'}" for s, c in STATIC_CASES],
)
def test_static_shape_model_matches_torchvision(shape, chunk_bytes, monkeypatch):
    if chunk_bytes:
        monkeypatch.setattr(keras_vswin.layers, "ATTENTION_CHUNK_BYTES", chunk_bytes)
        # A limit that actually splits this clip's first-stage attention.
        grid = (-(-shape[1] // 2), -(-shape[2] // 4), -(-shape[3] // 4))
        windows = int(np.prod([-(-g // w) for g, w in zip(grid, (8, 7, 7))]))
        assert keras_vswin.layers.attention_chunks(windows, 3, min(392, int(np.prod(grid)))) > 1
    torch.manual_seed(0)
    reference = video.swin3d_t(weights=None).eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    ours = keras_vswin.VideoSwinT(input_shape=(*shape[1:], 3), classifier_activation=None)
    assert load_state_dict(ours, state).ok
    x = np.random.default_rng(2).standard_normal((*shape, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()
    assert np.abs(np.asarray(ours(x)) - want).max() <= TOLERANCE
