"""PyTorch Video Swin state dicts -> Keras weights.

Conversion is two small tables:
1. `LAYOUTS`: per checkpoint layout, key rewrites to the canonical (official backbone) names;
2. `CANONICAL_TO_KERAS`: canonical name -> Keras variable path of a `keras_vswin` model.
Array layouts are fixed by the kind of Keras variable (Conv3D/Dense kernels are transposed).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from keras_vswin import windows as win

# Layout name -> ordered (pattern, replacement) rewrites to canonical keys. A replacement may be
# a function of the match. Keys that no rule matches keep their name (and are then reported as
# unexpected unless they are canonical already).
LAYOUTS = {
    # SwinTransformer/Video-Swin-Transformer (mmaction 0.x) recognizer checkpoints.
    "official": [
        (r"^backbone\.", ""),
        (r"^cls_head\.fc_cls\.", "head."),
    ],
    # mmaction2 1.x: same as official, but the final norm is `norm3`.
    "mmaction2": [
        (r"^backbone\.norm3\.", "norm."),
        (r"^backbone\.", ""),
        (r"^cls_head\.fc_cls\.", "head."),
    ],
    # torchvision.models.video.swin3d_*: stages and mergings interleaved in `features`.
    "torchvision": [
        (
            r"^features\.(\d+)\.(\d+)\.mlp\.0\.",
            lambda m: f"layers.{int(m[1]) // 2}.blocks.{m[2]}.mlp.fc1.",
        ),  # noqa: E501
        (
            r"^features\.(\d+)\.(\d+)\.mlp\.3\.",
            lambda m: f"layers.{int(m[1]) // 2}.blocks.{m[2]}.mlp.fc2.",
        ),  # noqa: E501
        (r"^features\.(\d+)\.(\d+)\.", lambda m: f"layers.{int(m[1]) // 2}.blocks.{m[2]}."),
        (r"^features\.(\d+)\.", lambda m: f"layers.{int(m[1]) // 2}.downsample."),
    ],
    # A bare backbone state dict (e.g. saved from `model.backbone.state_dict()`).
    "backbone": [],
}

_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
_NORM = {"weight": "gamma", "bias": "beta"}

# Canonical key pattern -> Keras variable path template (regex groups fill the template).
CANONICAL_TO_KERAS = [
    (r"patch_embed\.proj\.(weight|bias)", lambda m: f"patch_embedding/proj/{_param(m[1])}"),
    (r"patch_embed\.norm\.(weight|bias)", lambda m: f"patch_embedding/norm/{_NORM[m[1]]}"),
    (
        _BLOCK + r"(norm1|norm2)\.(weight|bias)",
        lambda m: f"stage{m[1]}_block{m[2]}/{m[3]}/{_NORM[m[4]]}",
    ),  # noqa: E501
    (
        _BLOCK + r"attn\.(qkv|proj)\.(weight|bias)",
        lambda m: f"stage{m[1]}_block{m[2]}/attn/{m[3]}/{_param(m[4])}",
    ),  # noqa: E501
    (
        _BLOCK + r"attn\.relative_position_bias_table",
        lambda m: f"stage{m[1]}_block{m[2]}/attn/relative_position_bias_table",
    ),  # noqa: E501
    (
        _BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)",
        lambda m: f"stage{m[1]}_block{m[2]}/{m[3]}/{_param(m[4])}",
    ),  # noqa: E501
    (
        r"layers\.(\d+)\.downsample\.norm\.(weight|bias)",
        lambda m: f"stage{m[1]}_merging/norm/{_NORM[m[2]]}",
    ),  # noqa: E501
    (
        r"layers\.(\d+)\.downsample\.reduction\.weight",
        lambda m: f"stage{m[1]}_merging/reduction/kernel",
    ),  # noqa: E501
    (r"norm\.(weight|bias)", lambda m: f"norm/{_NORM[m[1]]}"),
    (r"head\.(weight|bias)", lambda m: f"predictions/{_param(m[1])}"),
]

# Buffers that checkpoints carry but that the model recomputes.
_INDEX_KEY = re.compile(_BLOCK + r"attn\.relative_position_index$")
_IGNORED_KEYS = re.compile(r"(^|\.)(attn_mask|num_batches_tracked)$")


def _param(torch_name):
    return "kernel" if torch_name == "weight" else "bias"


def detect_layout(state_dict):
    """Name of the layout (a key of `LAYOUTS`) that `state_dict`'s keys follow."""
    keys = list(state_dict)
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if any(k.startswith("backbone.norm3.") for k in keys):
        return "mmaction2"
    if any(k.startswith("backbone.") for k in keys):
        return "official"
    if any(k.startswith("patch_embed.") for k in keys):
        return "backbone"
    raise ValueError(
        "Unrecognised state dict: expected Video Swin keys (`backbone.patch_embed.*`, "
        f"`features.*` or `patch_embed.*`); first keys are {keys[:5]}."
    )


def to_canonical(state_dict, layout=None):
    """Rename the keys of a state dict of `layout` (detected when None) to canonical names."""
    layout = layout or detect_layout(state_dict)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {sorted(LAYOUTS)}.")
    rules = [(re.compile(p), r) for p, r in LAYOUTS[layout]]
    out = {}
    for key, value in state_dict.items():
        name = key
        for pattern, replacement in rules:
            new = pattern.sub(replacement, name, count=1)
            if new != name:
                name = new
                break
        out[name] = value
    return out


def keras_path(canonical_key):
    """Keras variable path for a canonical key, or None if the key holds no model weight."""
    for pattern, template in CANONICAL_TO_KERAS:
        match = re.fullmatch(pattern, canonical_key)
        if match:
            return template(match)
    return None


def to_keras_array(torch_array, path):
    """Convert a PyTorch parameter to the layout of the Keras variable at `path`."""
    array = np.asarray(torch_array)
    if path.endswith("/kernel"):
        if array.ndim == 5:  # Conv3d (out, in, t, h, w) -> Conv3D (t, h, w, in, out)
            return array.transpose(2, 3, 4, 1, 0)
        if array.ndim == 2:  # Linear (out, in) -> Dense (in, out)
            return array.T
    return array  # biases, norms and bias tables (rows, heads) keep their layout


@dataclasses.dataclass
class LoadReport:
    """What `load_state_dict` did: every mismatch is listed, nothing is silent."""

    layout: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    skipped_head: list[str] = dataclasses.field(default_factory=list)
    checked_index: int = 0

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self):
        lines = [
            f"layout: {self.layout}; loaded {len(self.loaded)} tensors; "
            f"relative_position_index buffers verified: {self.checked_index}"
        ]
        if self.skipped_head:
            lines.append(f"head not loaded (new head requested): {', '.join(self.skipped_head)}")
        for title, items in (
            ("missing in checkpoint", self.missing),
            ("unexpected in checkpoint", self.unexpected),
        ):
            if items:
                lines.append(f"{title} ({len(items)}): {', '.join(items)}")
        for key, got, want in self.mismatched:
            lines.append(f"shape mismatch: {key}: checkpoint {got} vs model {want}")
        return "\n".join(lines)


def _check_index(key, value, table_rows):
    """A checkpoint's relative_position_index must equal the one the model computes."""
    value = np.asarray(value)
    n = value.shape[0]
    candidates = [w for w in _windows_with_table_rows(table_rows) if np.prod(w) == n]
    for window in candidates:
        if np.array_equal(value, win.relative_position_index(window)):
            return
    raise ValueError(
        f"{key}: the checkpoint's relative_position_index (shape {value.shape}) differs from "
        "the index this model computes; the checkpoint is not a standard Video Swin."
    )


def _windows_with_table_rows(rows):
    """Windows (wd, wh, ww) with (2wd-1)(2wh-1)(2ww-1) == rows and wh == ww."""
    found = []
    for side in range(1, 64):
        spatial = (2 * side - 1) ** 2
        if rows % spatial == 0 and (rows // spatial) % 2 == 1:
            found.append(((rows // spatial + 1) // 2, side, side))
    return found


def load_state_dict(model, state_dict, layout=None, strict=True, skip_head=False):
    """Copy a PyTorch Video Swin state dict (arrays) into a `keras_vswin` model.

    Args:
        model: a model from `keras_vswin.VideoSwin*`.
        state_dict: mapping of PyTorch key -> array (numpy or anything `np.asarray` takes).
        layout: one of `LAYOUTS`, detected from the keys when None.
        strict: raise `ValueError` with the full report on any missing/unexpected/mismatched key.
        skip_head: leave the model's head untouched (fine-tuning with a new class count).

    Returns:
        A `LoadReport`.
    """
    layout = layout or detect_layout(state_dict)
    report = LoadReport(layout=layout)
    variables = {v.path: v for v in model.weights}
    canonical = to_canonical(state_dict, layout)
    tables = {}
    assigned = set()
    for key, value in canonical.items():
        if _IGNORED_KEYS.search(key):
            continue
        if _INDEX_KEY.match(key):
            tables[key] = value
            continue
        path = keras_path(key)
        if path is not None and path.startswith("predictions/") and skip_head:
            report.skipped_head.append(key)
            continue
        if path is None or path not in variables:
            report.unexpected.append(key)
            continue
        variable = variables[path]
        array = to_keras_array(value, path)
        if array.shape != tuple(variable.shape):
            report.mismatched.append((key, tuple(np.shape(value)), tuple(variable.shape)))
            continue
        variable.assign(array.astype(variable.dtype))
        assigned.add(path)
        report.loaded.append(key)
    for key, value in tables.items():
        table_path = keras_path(
            key.replace("relative_position_index", "relative_position_bias_table")
        )
        if table_path in variables:
            _check_index(key, value, variables[table_path].shape[0])
            report.checked_index += 1
    for path in variables:
        if path not in assigned and not (skip_head and path.startswith("predictions/")):
            report.missing.append(path)
    if strict and not report.ok:
        raise ValueError("The checkpoint does not fit the model:\n" + report.summary())
    return report
