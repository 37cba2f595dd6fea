"""PyTorch Video Swin state dicts -> Keras weights.

Conversion is two small tables and a few pure functions over them:

1. `LAYOUTS`: per checkpoint layout, key rewrites to the canonical (official backbone) names,
   and `EXPORT_LAYOUTS`, the same per layout in the other direction;
2. `CANONICAL_TO_KERAS`: canonical name -> Keras variable path of a `keras_vswin` model.

Array layouts are fixed by the kind of Keras variable (Conv3D/Dense kernels are transposed).
On top of the tables: `infer_architecture` (the `VideoSwin` arguments a state dict implies),
`load_state_dict` (strict loading with a `LoadReport`), `resize_bias_table` (window change when
fine-tuning) and `inflate_2d_checkpoint` (ImageNet Swin -> Video Swin, paper section 3.4).
Building a model from a checkpoint (`convert_checkpoint`) sits above, in `keras_vswin.weights`:
this module never imports the model.

Arrays are NumPy throughout; nothing here imports torch. Checkpoint files are read by the safe
reader of `keras_vswin.checkpoint_reader` (no arbitrary unpickling).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re

import numpy as np

from keras_vswin import checkpoint_reader as reader
from keras_vswin import windows as win

logger = logging.getLogger("keras_vswin")

# Layout name -> ordered (pattern, replacement) rewrites to canonical keys; the first rule that
# matches a key applies. A replacement may be a function of the match. Keys that no rule matches
# keep their name (and are then reported as unexpected unless they are canonical already).
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
        (r"^features\.(\d+)\.(\d+)\.mlp\.0\.", lambda m: f"{_tv_block(m)}mlp.fc1."),
        (r"^features\.(\d+)\.(\d+)\.mlp\.3\.", lambda m: f"{_tv_block(m)}mlp.fc2."),
        (r"^features\.(\d+)\.(\d+)\.", lambda m: _tv_block(m)),
        (r"^features\.(\d+)\.", lambda m: f"layers.{int(m[1]) // 2}.downsample."),
    ],
    # A bare backbone state dict (e.g. saved from `model.backbone.state_dict()`).
    "backbone": [],
}

# Canonical -> layout, the inverse of `LAYOUTS` (used to write checkpoints of any layout, e.g.
# for `keras-vswin verify` and the tests). A None replacement drops the key.
EXPORT_LAYOUTS = {
    "official": [
        (r"^head\.", "cls_head.fc_cls."),
        (r"^", "backbone."),
    ],
    "mmaction2": [
        (r"^head\.", "cls_head.fc_cls."),
        (r"^norm\.", "backbone.norm3."),
        (r"^", "backbone."),
    ],
    "torchvision": [
        (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", lambda m: f"{_tv_features(m)}mlp.0."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", lambda m: f"{_tv_features(m)}mlp.3."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.", lambda m: _tv_features(m)),
        (r"^layers\.(\d+)\.downsample\.", lambda m: f"features.{2 * int(m[1]) + 1}."),
    ],
    "backbone": [
        (r"^head\..*", None),
    ],
}


def _tv_block(match):
    return f"layers.{int(match[1]) // 2}.blocks.{match[2]}."


def _tv_features(match):
    return f"features.{2 * int(match[1])}.{match[2]}."


_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
_NORM = {"weight": "gamma", "bias": "beta"}

# Canonical key pattern -> Keras variable path template (regex groups fill the template).
CANONICAL_TO_KERAS = [
    (r"patch_embed\.proj\.(weight|bias)", lambda m: f"patch_embedding/proj/{_param(m[1])}"),
    (r"patch_embed\.norm\.(weight|bias)", lambda m: f"patch_embedding/norm/{_NORM[m[1]]}"),
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", lambda m: f"{_blk(m)}/{m[3]}/{_NORM[m[4]]}"),
    (
        _BLOCK + r"attn\.(qkv|proj)\.(weight|bias)",
        lambda m: f"{_blk(m)}/attn/{m[3]}/{_param(m[4])}",
    ),
    (
        _BLOCK + r"attn\.relative_position_bias_table",
        lambda m: f"{_blk(m)}/attn/relative_position_bias_table",
    ),
    (_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", lambda m: f"{_blk(m)}/{m[3]}/{_param(m[4])}"),
    (
        r"layers\.(\d+)\.downsample\.norm\.(weight|bias)",
        lambda m: f"stage{m[1]}_merging/norm/{_NORM[m[2]]}",
    ),
    (
        r"layers\.(\d+)\.downsample\.reduction\.weight",
        lambda m: f"stage{m[1]}_merging/reduction/kernel",
    ),
    (r"norm\.(weight|bias)", lambda m: f"norm/{_NORM[m[1]]}"),
    (r"head\.(weight|bias)", lambda m: f"predictions/{_param(m[1])}"),
]

# Buffers that checkpoints carry but that the model recomputes.
_INDEX_KEY = re.compile(_BLOCK + r"attn\.relative_position_index$")
_TABLE_KEY = re.compile(_BLOCK + r"attn\.relative_position_bias_table$")
_IGNORED_KEYS = re.compile(r"(^|\.)(attn_mask|num_batches_tracked)$")
_HEAD_PREFIX = "predictions/"
# The spatial window side every released model uses; the tie-break of `window_from_table_rows`.
PREFERRED_SPATIAL_WINDOW = 7


def _param(torch_name):
    return "kernel" if torch_name == "weight" else "bias"


def _blk(match):
    return f"stage{match[1]}_block{match[2]}"


# ----------------------------------------------------------------------------------------------
# Key mapping


def _shown(key, limit=120):
    """A key for an error message, cut short: a hostile checkpoint's names can be huge."""
    text = key if isinstance(key, str) else f"<{type(key).__name__} key>"
    return text if len(text) <= limit else text[:limit] + "..."


def _strip_data_parallel(state_dict):
    """`module.` prefixes of `torch.nn.DataParallel` checkpoints are not part of any layout."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def detect_layout(state_dict):
    """Name of the layout (a key of `LAYOUTS`) that `state_dict`'s keys follow."""
    keys = list(_strip_data_parallel(state_dict))
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
        f"`features.*` or `patch_embed.*`); first keys are {[_shown(k) for k in keys[:5]]}."
    )


def _compile(rules):
    return [(re.compile(p), r) for p, r in rules]


def _rename_key(key, compiled):
    """`key` renamed by the first matching rule (None: dropped; no match: unchanged)."""
    for pattern, replacement in compiled:
        if pattern.search(key):
            return None if replacement is None else pattern.sub(replacement, key, count=1)
    return key


def _renamed_entries(state_dict, compiled):
    """`{new key: (original key, value)}`; two keys that map to one name are an error.

    E.g. `backbone.norm.weight` and `norm.weight` (official layout), or `backbone.norm3.*` and
    `backbone.norm.*` (mmaction2): keeping either silently would load a weight the user did
    not choose.
    """
    entries = {}
    for key, value in state_dict.items():
        new = _rename_key(key, compiled)
        if new is None:
            continue
        if new in entries:
            raise ValueError(
                f"Ambiguous state dict: `{_shown(entries[new][0])}` and `{_shown(key)}` both "
                f"map to `{_shown(new)}`; remove one of them."
            )
        entries[new] = (key, value)
    return entries


def _rename(state_dict, rules):
    entries = _renamed_entries(state_dict, _compile(rules))
    return {key: value for key, (_, value) in entries.items()}


def _check_layout(layout, table):
    if layout not in table:
        raise ValueError(f"layout={layout!r} is not one of {sorted(table)}.")


def to_canonical(state_dict, layout=None):
    """Rename the keys of a state dict of `layout` (detected when None) to canonical names."""
    state_dict = _strip_data_parallel(state_dict)
    layout = layout or detect_layout(state_dict)
    _check_layout(layout, LAYOUTS)
    return _rename(state_dict, LAYOUTS[layout])


def from_canonical(state_dict, layout):
    """Rename canonical keys to `layout`'s names (the inverse of `to_canonical`).

    The "backbone" layout drops the head.
    """
    _check_layout(layout, EXPORT_LAYOUTS)
    return _rename(state_dict, EXPORT_LAYOUTS[layout])


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


def from_keras_array(keras_array, path):
    """Inverse of `to_keras_array`: a Keras variable's value in PyTorch's layout."""
    array = np.asarray(keras_array)
    if path.endswith("/kernel"):
        if array.ndim == 5:
            return array.transpose(4, 3, 0, 1, 2)
        if array.ndim == 2:
            return array.T
    return array


def canonical_keys(depths, include_head=True, qkv_bias=True, patch_norm=True):
    """Every canonical key of a Video Swin with `depths` blocks per stage, in model order."""
    keys = ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    if patch_norm:
        keys += ["patch_embed.norm.weight", "patch_embed.norm.bias"]
    for i, depth in enumerate(depths):
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}."
            keys += [block + "norm1.weight", block + "norm1.bias", block + "attn.qkv.weight"]
            keys += [block + "attn.qkv.bias"] if qkv_bias else []
            keys += [block + n for n in ("attn.proj.weight", "attn.proj.bias")]
            keys += [block + "attn.relative_position_bias_table"]
            keys += [block + n for n in ("norm2.weight", "norm2.bias")]
            keys += [block + f"mlp.{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")]
        if i < len(depths) - 1:
            merging = f"layers.{i}.downsample."
            keys += [merging + n for n in ("norm.weight", "norm.bias", "reduction.weight")]
    keys += ["norm.weight", "norm.bias"]
    keys += ["head.weight", "head.bias"] if include_head else []
    return keys


def model_state_dict(model, with_index=True):
    """The canonical PyTorch state dict of a `keras_vswin` model (NumPy arrays).

    The inverse of `load_state_dict`: `from_canonical(model_state_dict(m), "official")` is an
    official-layout state dict. `with_index` adds the `relative_position_index` buffers that
    PyTorch checkpoints carry.
    """
    arch = model_architecture(model)
    variables = {v.path: v for v in model.weights}
    out = {}
    for key in canonical_keys(
        arch["depths"], arch["classes"] is not None, arch["qkv_bias"], arch["patch_norm"]
    ):
        path = keras_path(key)
        out[key] = from_keras_array(variables[path].numpy(), path)
        if with_index and _TABLE_KEY.match(key):
            index = win.relative_position_index(arch["window_size"]).astype("int64")
            out[key.replace("bias_table", "index")] = index
    return out


# ----------------------------------------------------------------------------------------------
# Architecture inference


def _factor_triples(n):
    """All (a, b, c) of positive ints with a * b * c == n."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return [(a, b, n // (a * b)) for a in divisors for b in divisors if (n // a) % b == 0]


def window_from_index(index, table_rows=None):
    """The window whose `relative_position_index` equals `index` (an `(N, N)` array), or None.

    Any window (wd, wh, ww) with wd * wh * ww == N is tried (no square assumption); with
    `table_rows` only windows whose bias table has that many rows.
    """
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[0] != index.shape[1]:
        return None
    for window in _factor_triples(int(index.shape[0])):
        if table_rows is not None and win.bias_table_size(window) != table_rows:
            continue
        if np.array_equal(index, win.relative_position_index(window)):
            return window
    return None


def window_from_table_rows(rows):
    """Windows `(wd, wh, wh)` whose bias table has `rows` rows, best guess first.

    A table alone fixes only `(2wd-1)(2wh-1)(2ww-1)`: this assumes a square spatial window
    (wh == ww) and, when several fit, puts wh == 7 (every released model) first, then larger
    spatial windows first. E.g. 2535 -> (8, 7, 7) (also (1268, 1, 1)); 5239 -> (16, 7, 7).
    """
    found = []
    for side in range(1, int(math.isqrt(rows)) // 2 + 2):
        spatial = (2 * side - 1) ** 2
        if rows % spatial == 0 and (rows // spatial) % 2 == 1:
            found.append(((rows // spatial + 1) // 2, side, side))
    return sorted(found, key=lambda w: (w[1] != PREFERRED_SPATIAL_WINDOW, -w[1]))


def _checkpoint_window(canonical, block_prefix, prefer=None):
    """(window, how it was found) of one block of a canonical state dict.

    Without an index buffer, `prefer` (the model's window) wins when its table size fits.
    """
    table = canonical[block_prefix + "relative_position_bias_table"]
    rows = int(np.shape(table)[0])
    index = canonical.get(block_prefix + "relative_position_index")
    if index is None and prefer is not None and win.bias_table_size(prefer) == rows:
        return tuple(prefer), "bias table rows (the model's window)"
    if index is not None:
        window = window_from_index(index, rows)
        if window is None:
            raise ValueError(
                f"{block_prefix}relative_position_index (shape {np.shape(index)}) is not the "
                f"relative position index of any window with a {rows}-row bias table: the "
                "checkpoint is not a standard Video Swin."
            )
        return window, "relative_position_index"
    candidates = window_from_table_rows(rows)
    if not candidates:
        raise ValueError(
            f"{block_prefix}relative_position_bias_table has {rows} rows, which is not "
            "(2wd-1)(2wh-1)(2ww-1) for any window with wh == ww."
        )
    how = "bias table rows, assuming a square spatial window"
    if len(candidates) > 1:
        how += f"; ambiguous ({candidates}), chose {candidates[0]}"
    return candidates[0], how


def is_2d_state_dict(state_dict):
    """Whether `state_dict` is an image (2D) Swin: a 4D patch embedding kernel."""
    proj = _strip_data_parallel(state_dict).get("patch_embed.proj.weight")
    return proj is not None and np.ndim(proj) == 4


def _stage_depths(keys, state_name):
    blocks = {}
    for key in keys:
        match = re.match(_BLOCK, key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks:
        raise ValueError(f"{state_name}: no `layers.<i>.blocks.<j>.*` keys.")
    depths = []
    for stage in range(max(blocks) + 1):
        found = blocks.get(stage, set())
        if not found or found != set(range(len(found))):
            raise ValueError(
                f"{state_name}: stage {stage} has blocks {sorted(found)}; expected 0..n-1."
            )
        depths.append(len(found))
    return tuple(depths)


def infer_architecture(state_dict, layout=None):
    """The `VideoSwin` arguments a Video Swin state dict was trained with.

    Args:
        state_dict: `{key: array}` of any layout in `LAYOUTS` (arrays or anything with a shape).
        layout: the layout, detected from the keys when None.

    Returns:
        A dict with `embed_dim`, `depths`, `num_heads`, `patch_size`, `window_size`,
        `mlp_ratio`, `qkv_bias`, `patch_norm` (the `VideoSwin` arguments), `classes` (the head's
        class count, None without a head), `layout` and `window_source` (how the window was
        found: from the `relative_position_index` buffers when present, else from the bias
        table rows under the square-spatial-window assumption of `window_from_table_rows`, which
        is logged when ambiguous).
    """
    if is_2d_state_dict(state_dict):
        raise ValueError(
            "This is an image (2D) Swin checkpoint (4D patch embedding kernel): inflate it with "
            "`keras_vswin.convert.inflate_2d_checkpoint` (or pass it as `weights=` to a model, "
            "which inflates it)."
        )
    layout = layout or detect_layout(state_dict)
    canonical = to_canonical(state_dict, layout)
    proj = canonical.get("patch_embed.proj.weight")
    if proj is None or np.ndim(proj) != 5:
        raise ValueError(
            f"Not a Video Swin state dict ({layout} layout): expected a 5D patch embedding "
            f"kernel `patch_embed.proj.weight`, got {None if proj is None else np.shape(proj)}."
        )
    embed_dim, in_channels, *patch_size = (int(d) for d in np.shape(proj))
    if in_channels != 3:
        raise ValueError(f"patch_embed.proj.weight takes {in_channels} channels, not RGB (3).")
    depths = _stage_depths(canonical, "state dict")
    num_heads, windows = [], {}
    for stage in range(len(depths)):
        for block in range(depths[stage]):
            prefix = f"layers.{stage}.blocks.{block}.attn."
            table = canonical.get(prefix + "relative_position_bias_table")
            if table is None:
                raise ValueError(f"{prefix}relative_position_bias_table is missing.")
            if block == 0:
                num_heads.append(int(np.shape(table)[1]))
            windows.setdefault(_checkpoint_window(canonical, prefix), []).append(prefix)
    if len({w for w, _ in windows}) > 1:
        raise ValueError(
            f"Blocks disagree on the window size: { {w: len(p) for w, p in windows.items()} }."
        )
    (window, how), *_ = windows
    if "ambiguous" in how:
        logger.warning("Window size inferred from the bias table rows: %s.", how)
    fc1 = canonical.get("layers.0.blocks.0.mlp.fc1.weight")
    mlp_ratio = float(np.shape(fc1)[0]) / embed_dim if fc1 is not None else 4.0
    head = canonical.get("head.weight")
    return dict(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(num_heads),
        patch_size=tuple(patch_size),
        window_size=tuple(window),
        mlp_ratio=mlp_ratio,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in canonical,
        patch_norm="patch_embed.norm.weight" in canonical,
        classes=None if head is None else int(np.shape(head)[0]),
        layout=layout,
        window_source=how,
    )


# Keys of `infer_architecture`/`model_architecture` that `VideoSwin` takes.
MODEL_ARGUMENTS = (
    "embed_dim",
    "depths",
    "num_heads",
    "patch_size",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "patch_norm",
)


def model_architecture(model):
    """The architecture of a `keras_vswin` model, in the form `infer_architecture` returns."""
    try:
        patch = model.get_layer("patch_embedding")
    except ValueError:
        raise ValueError(
            f"{model.name!r} is not a keras_vswin Video Swin model (no `patch_embedding` layer)."
        ) from None
    blocks = {}
    for layer in model.layers:
        match = re.fullmatch(r"stage(\d+)_block(\d+)", layer.name)
        if match:
            blocks.setdefault(int(match[1]), {})[int(match[2])] = layer
    depths = tuple(len(blocks[s]) for s in sorted(blocks))
    first = [blocks[s][0] for s in sorted(blocks)]
    head = next((layer for layer in model.layers if layer.name == "predictions"), None)
    return dict(
        embed_dim=patch.embed_dim,
        depths=depths,
        num_heads=tuple(b.num_heads for b in first),
        patch_size=tuple(patch.patch_size),
        window_size=tuple(first[0].window_size),
        mlp_ratio=float(first[0].mlp_ratio),
        qkv_bias=first[0].qkv_bias,
        patch_norm=patch.patch_norm,
        classes=None if head is None else int(head.units),
    )


def architecture_differences(expected, actual, keys=MODEL_ARGUMENTS, names=("checkpoint", "model")):
    """`["key: checkpoint X, model Y", ...]` for the architecture entries that differ."""
    out = []
    for key in keys:
        a, b = expected.get(key), actual.get(key)
        if isinstance(a, list | tuple):
            a, b = tuple(a), tuple(b) if isinstance(b, list | tuple) else b
        if a != b:
            out.append(f"{key}: {names[0]} {a!r}, {names[1]} {b!r}")
    return out


# ----------------------------------------------------------------------------------------------
# Relative position bias tables: window change and 2D -> 3D


def _cubic_kernel(distance, a=-0.75):
    d = abs(distance)
    if d <= 1:
        return ((a + 2) * d - (a + 3)) * d * d + 1
    if d < 2:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return 0.0


def bicubic_matrix(size_in, size_out):
    """`(size_out, size_in)` matrix of 1D bicubic resizing as `torch.nn.functional.interpolate`
    computes it (mode="bicubic", align_corners=False): cubic convolution with a = -0.75, source
    coordinate `(i + 0.5) * size_in / size_out - 0.5`, taps clamped at the borders.

    (`tf.image.resize(method="bicubic")` uses a = -0.5 with other border handling: on a random
    13x13 -> 23x23 grid it differs from PyTorch by ~10% of the value range. The official
    inflation code calls PyTorch's kernel, so that is the one reproduced here, to ~1e-6.)
    """
    matrix = np.zeros((size_out, size_in), dtype="float64")
    scale = size_in / size_out
    for i in range(size_out):
        source = (i + 0.5) * scale - 0.5
        left = math.floor(source)
        t = source - left
        for tap in range(-1, 3):
            j = min(max(left + tap, 0), size_in - 1)
            matrix[i, j] += _cubic_kernel(tap - t)
    return matrix


def _offset_extend_matrix(size_in, size_out):
    """Rows of offsets -(n-1)..(n-1): keep the offsets both sizes have, clamp the others."""
    half_in, half_out = (size_in - 1) // 2, (size_out - 1) // 2
    matrix = np.zeros((size_out, size_in), dtype="float64")
    for i, offset in enumerate(range(-half_out, half_out + 1)):
        matrix[i, min(max(offset, -half_in), half_in) + half_in] = 1.0
    return matrix


RESIZE_METHODS = ("bicubic", "extend")


def resize_bias_table(table, old_window, new_window, method="bicubic"):
    """Resize a relative position bias table from `old_window` to `new_window`.

    A table of window (wd, wh, ww) is a grid of (2wd-1) x (2wh-1) x (2ww-1) relative offsets
    (temporal slowest) by heads. Each axis whose size changes is resampled on its own:

    - "bicubic" (default): the offset grid is stretched to the new size with PyTorch's bicubic
      kernel (`bicubic_matrix`), the rule of the official code for spatial windows (2D -> 3D
      inflation) and of Swin fine-tuning at a larger window. An axis of size 1 is duplicated.
    - "extend": offsets present in both windows keep their exact values; new, larger offsets
      copy the largest old offset of the same sign; a smaller window drops the outer offsets.
      Use it when tokens keep their scale (e.g. 8x7x7 -> 16x7x7 for SSv2 at the same frame
      rate): offset k still means k tokens apart.

    Args:
        table: `(rows, heads)` array, rows = (2wd-1)(2wh-1)(2ww-1) of `old_window`.
        old_window, new_window: `(wd, wh, ww)`.
        method: "bicubic" or "extend".

    Returns:
        A float32 `(rows', heads)` array for `new_window`.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"`method` must be one of {RESIZE_METHODS}, got {method!r}.")
    table = np.asarray(table, dtype="float64")
    old_window, new_window = tuple(old_window), tuple(new_window)
    old_sizes = [2 * w - 1 for w in old_window]
    new_sizes = [2 * w - 1 for w in new_window]
    if table.ndim != 2 or table.shape[0] != np.prod(old_sizes):
        raise ValueError(
            f"A bias table of window {old_window} has {np.prod(old_sizes)} rows, got shape "
            f"{table.shape}."
        )
    heads = table.shape[1]
    grid = table.reshape(*old_sizes, heads)
    resample = bicubic_matrix if method == "bicubic" else _offset_extend_matrix
    for axis, (old, new) in enumerate(zip(old_sizes, new_sizes)):
        if old != new:
            grid = np.moveaxis(np.tensordot(resample(old, new), grid, axes=(1, axis)), 0, axis)
    return grid.reshape(-1, heads).astype("float32")


INFLATION_METHODS = ("inflate", "center")


def _twod_downsample_shift(keys):
    """timm-style 2D checkpoints put stage i's merging at `layers.{i+1}.downsample`."""
    if any(k.startswith("layers.0.downsample.") for k in keys):
        return 0
    return 1 if any(re.match(r"layers\.\d+\.downsample\.", k) for k in keys) else 0


def inflate_2d_checkpoint(
    state_dict_2d, patch_size=(2, 4, 4), window_size=(8, 7, 7), method="inflate"
):
    """An image Swin state dict -> a canonical Video Swin state dict (paper, section 3.4).

    Reads the official 2D Swin keys (`patch_embed.proj.weight` `(C, 3, ph, pw)`,
    `layers.{i}.blocks.{j}.*`, `layers.{i}.downsample.*`, `norm.*`), as stored under `model` in
    microsoft/Swin-Transformer checkpoints. Dropped: `attn_mask` and `relative_position_index`
    buffers (recomputed) and the 2D `head.*` (ImageNet classes).

    - method="inflate" (the official default): the patch kernel gets a temporal axis of
      `patch_size[0]` copies divided by `patch_size[0]` (so a clip of identical frames embeds
      as the image does); each bias table, resized bicubically to the new spatial window if it
      differs (`resize_bias_table`), is repeated for every temporal offset (2wd-1 times).
    - method="center": the patch kernel is the 2D kernel at the temporal centre
      (`patch_size[0] // 2`) and zeros elsewhere; the 2D bias goes to temporal offset 0 and
      the other temporal offsets start at zero bias.

    Returns:
        `{canonical key: float32 array}` without a head, for `load_state_dict(...,
        layout="backbone")` into a `VideoSwin(patch_size=..., window_size=...)`.
    """
    if method not in INFLATION_METHODS:
        raise ValueError(f"`method` must be one of {INFLATION_METHODS}, got {method!r}.")
    state_dict_2d = _strip_data_parallel(state_dict_2d)
    if not is_2d_state_dict(state_dict_2d):
        raise ValueError(
            "Not an image Swin state dict: expected `patch_embed.proj.weight` of shape "
            "(C, 3, patch_h, patch_w)."
        )
    patch_t, patch_h, patch_w = patch_size
    window_t = window_size[0]
    shift = _twod_downsample_shift(state_dict_2d)
    out = {}
    for key, value in state_dict_2d.items():
        value = np.asarray(value)
        if key.startswith("head.") or _IGNORED_KEYS.search(key) or _INDEX_KEY.match(key):
            continue
        if shift:
            match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
            if match:
                key = f"layers.{int(match[1]) - shift}.downsample.{match[2]}"
        if key == "patch_embed.proj.weight":
            if value.shape[2:] != (patch_h, patch_w):
                raise ValueError(
                    f"The 2D patch is {value.shape[2:]} but patch_size={tuple(patch_size)}: the "
                    "spatial patch must match."
                )
            if method == "inflate":
                value = np.repeat(value[:, :, None], patch_t, axis=2) / patch_t
            else:
                kernel = np.zeros(value.shape[:2] + (patch_t,) + value.shape[2:], value.dtype)
                kernel[:, :, patch_t // 2] = value
                value = kernel
        elif _TABLE_KEY.match(key):
            side = math.isqrt(value.shape[0])
            if side * side != value.shape[0] or side % 2 == 0:
                raise ValueError(f"{key}: {value.shape[0]} rows is not a square 2D table.")
            old_window = (1, (side + 1) // 2, (side + 1) // 2)
            value = resize_bias_table(value, old_window, (1, *window_size[1:]), "bicubic")
            if method == "inflate":
                value = np.tile(value, (2 * window_t - 1, 1))
            else:
                temporal = np.zeros((2 * window_t - 1, *value.shape), value.dtype)
                temporal[window_t - 1] = value
                value = temporal.reshape(-1, value.shape[-1])
        out[key] = value.astype("float32") if value.dtype.kind == "f" else value
    return out


def infer_2d_architecture(state_dict_2d):
    """`embed_dim`, `depths`, `num_heads`, spatial patch and window, classes of an image Swin."""
    state_dict_2d = _strip_data_parallel(state_dict_2d)
    if not is_2d_state_dict(state_dict_2d):
        raise ValueError("Not an image Swin state dict (no 4D `patch_embed.proj.weight`).")
    proj = np.shape(state_dict_2d["patch_embed.proj.weight"])
    depths = _stage_depths(state_dict_2d, "2D state dict")
    num_heads, spatial = [], None
    for stage in range(len(depths)):
        rows, heads = np.shape(
            state_dict_2d[f"layers.{stage}.blocks.0.attn.relative_position_bias_table"]
        )
        num_heads.append(int(heads))
        spatial = ((math.isqrt(rows) + 1) // 2,) * 2
    fc1 = state_dict_2d.get("layers.0.blocks.0.mlp.fc1.weight")
    head = state_dict_2d.get("head.weight")
    return dict(
        embed_dim=int(proj[0]),
        depths=depths,
        num_heads=tuple(num_heads),
        patch_size=tuple(int(p) for p in proj[2:]),
        window_size=spatial,
        mlp_ratio=float(np.shape(fc1)[0]) / int(proj[0]) if fc1 is not None else 4.0,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state_dict_2d,
        patch_norm="patch_embed.norm.weight" in state_dict_2d,
        classes=None if head is None else int(np.shape(head)[0]),
    )


# ----------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass
class LoadReport:
    """What `load_state_dict` did: every mismatch is listed, nothing is silent."""

    layout: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    skipped_head: list[str] = dataclasses.field(default_factory=list)
    resized: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    checked_index: int = 0

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self):
        lines = [
            f"layout: {self.layout}; loaded {len(self.loaded)} tensors; "
            f"relative_position_index buffers verified: {self.checked_index}"
        ]
        lines += self.notes
        if self.skipped_head:
            lines.append(
                f"checkpoint head not loaded (the model's head is new or absent): "
                f"{', '.join(self.skipped_head)}"
            )
        if self.resized:
            windows = sorted({(old, new) for _, old, new in self.resized})
            lines.append(
                f"bias tables resized for a new window ({len(self.resized)} tables): "
                + ", ".join(f"{old} -> {new}" for old, new in windows)
            )
        for title, items in (
            ("missing in checkpoint", self.missing),
            ("unexpected in checkpoint", self.unexpected),
        ):
            if items:
                lines.append(f"{title} ({len(items)}): {', '.join(items)}")
        for key, got, want in self.mismatched:
            lines.append(f"shape mismatch: {key}: checkpoint {got} vs model {want}")
        return "\n".join(lines)


def load_state_dict(
    model,
    state_dict,
    layout=None,
    strict=True,
    skip_head=False,
    resize_window=False,
    resize_method="bicubic",
):
    """Copy a PyTorch Video Swin state dict (arrays) into a `keras_vswin` model.

    `relative_position_index` buffers are never loaded: each is checked against the index the
    model computes for its window (a mismatch raises `ValueError`).

    Args:
        model: a model from `keras_vswin.VideoSwin*`.
        state_dict: mapping of PyTorch key -> array (numpy or anything `np.asarray` takes).
        layout: one of `LAYOUTS`, detected from the keys when None.
        strict: raise `ValueError` with the full report on any missing/unexpected/mismatched key.
        skip_head: do not load the checkpoint's head; the model's head (if any) keeps its fresh
            initialisation (fine-tuning with a new class count, or a model without head).
        resize_window: when the checkpoint was trained with another window than the model's,
            resize its bias tables with `resize_bias_table` instead of reporting a mismatch.
        resize_method: "bicubic" or "extend" (see `resize_bias_table`).

    Returns:
        A `LoadReport`.
    """
    layout = layout or detect_layout(state_dict)
    _check_layout(layout, LAYOUTS)
    report = LoadReport(layout=layout)
    arch = model_architecture(model)
    variables = {v.path: v for v in model.weights}
    model_window = arch["window_size"]
    rules = _compile(LAYOUTS[layout])
    # canonical key -> (checkpoint key, value); reports name the checkpoint's own keys.
    entries = _renamed_entries(_strip_data_parallel(state_dict), rules)
    canonical = {key: value for key, (_, value) in entries.items()}
    assigned, head_mismatch, table_mismatch = set(), False, False
    for key, (name, value) in entries.items():
        if _IGNORED_KEYS.search(key):
            continue
        if _INDEX_KEY.match(key):
            report.checked_index += _check_index(canonical, key, model_window, resize_window)
            continue
        path = keras_path(key)
        if path is not None and path.startswith(_HEAD_PREFIX) and skip_head:
            report.skipped_head.append(name)
            continue
        if path is None or path not in variables:
            report.unexpected.append(name)
            continue
        variable = variables[path]
        array = to_keras_array(value, path)
        if resize_window and _TABLE_KEY.match(key) and array.shape[1:] == variable.shape[1:]:
            prefix = key[: -len("relative_position_bias_table")]
            old_window, _ = _checkpoint_window(canonical, prefix, prefer=model_window)
            if old_window != model_window:
                array = resize_bias_table(array, old_window, model_window, resize_method)
                report.resized.append((name, old_window, model_window))
        assigned.add(path)
        if array.shape != tuple(variable.shape):
            report.mismatched.append((name, tuple(np.shape(value)), tuple(variable.shape)))
            head_mismatch |= path.startswith(_HEAD_PREFIX)
            table_mismatch |= bool(_TABLE_KEY.match(key))
            continue
        variable.assign(array.astype(variable.dtype, copy=False))
        report.loaded.append(name)
    expected = canonical_keys(
        arch["depths"], arch["classes"] is not None, arch["qkv_bias"], arch["patch_norm"]
    )
    export_rules = _compile(EXPORT_LAYOUTS[layout])
    for key in expected:
        path = keras_path(key)
        if path not in assigned and not (skip_head and path.startswith(_HEAD_PREFIX)):
            report.missing.append(_rename_key(key, export_rules) or key)
    if strict and not report.ok:
        hint = ""
        if table_mismatch:
            hint = (
                "\nThe relative position bias tables differ in size: the checkpoint was trained "
                "with another window_size. Build the model with the checkpoint's window, or pass "
                "resize_window=True to resize the tables."
            )
        if head_mismatch:
            hint += "\nThe head has another class count: pass skip_head=True for a new head."
        raise ValueError("The checkpoint does not fit the model:\n" + report.summary() + hint)
    return report


def _check_index(canonical, key, model_window, resize_window):
    """Check one relative_position_index buffer; returns 1 (one buffer verified)."""
    value = np.asarray(canonical[key])
    expected = win.relative_position_index(model_window)
    if value.shape == expected.shape and np.array_equal(value, expected):
        return 1
    table = canonical.get(key.replace("relative_position_index", "relative_position_bias_table"))
    rows = None if table is None else int(np.shape(table)[0])
    window = window_from_index(value, rows)
    if window is None:
        raise ValueError(
            f"{key}: the checkpoint's relative_position_index (shape {value.shape}) is not the "
            "index of any window with its bias table; the checkpoint is not a standard Video Swin."
        )
    if not resize_window:
        raise ValueError(
            f"{key}: the checkpoint was trained with window_size={window}, the model has "
            f"{model_window}. Build the model with window_size={window}, or pass "
            "resize_window=True to resize the bias tables."
        )
    return 1


def load_2d_state_dict(model, state_dict_2d, method="inflate"):
    """Initialise a `keras_vswin` model from an image Swin state dict (`inflate_2d_checkpoint`).

    The model's patch size and window decide the inflation; the 2D head is never loaded (the
    model's head, if any, keeps its fresh initialisation). Returns the `LoadReport`.
    """
    arch = model_architecture(model)
    arch_2d = infer_2d_architecture(state_dict_2d)
    differences = [
        f"{key}: 2D checkpoint {arch_2d[key]!r}, model {arch[key]!r}"
        for key in ("embed_dim", "depths", "num_heads", "mlp_ratio", "qkv_bias", "patch_norm")
        if arch_2d[key] != arch[key]
    ]
    if arch_2d["patch_size"] != arch["patch_size"][1:]:
        differences.append(
            f"spatial patch: 2D checkpoint {arch_2d['patch_size']}, model {arch['patch_size'][1:]}"
        )
    if differences:
        raise ValueError("The 2D checkpoint does not fit the model: " + "; ".join(differences))
    canonical = inflate_2d_checkpoint(
        state_dict_2d, arch["patch_size"], arch["window_size"], method=method
    )
    report = load_state_dict(
        model, canonical, layout="backbone", skip_head=arch["classes"] is not None
    )
    report.layout = "2d"
    report.notes.append(
        f"initialised from a 2D Swin (window {arch_2d['window_size']}) by method={method!r} to "
        f"patch {arch['patch_size']}, window {arch['window_size']}; the 2D head is not used"
    )
    return report


# ----------------------------------------------------------------------------------------------
# Checkpoint -> model


def read_state_dict(path, allow_unknown_globals=False, memory_budget=None):
    """`{key: numpy array}` of a PyTorch checkpoint file, read without unpickling code.

    Uses `keras_vswin.checkpoint_reader`, which builds only tensors and plain containers within
    a memory budget bounded by the file's size. A file that references any other class,
    anywhere (the weights, `meta`, `optimizer`, ...), is refused with
    `checkpoint_reader.UnsafeCheckpointError` naming it, unless `allow_unknown_globals=True`:
    then those objects become inert placeholders (still nothing is imported or called) and a
    warning names them; the weights themselves must be arrays. `memory_budget` (bytes) raises
    the reader's default budget for a trusted file that needs more.
    """
    checkpoint = reader.load_checkpoint(
        path, allow_unknown_globals=allow_unknown_globals, memory_budget=memory_budget
    )
    return reader.state_dict_from_checkpoint(checkpoint)


__all__ = [
    "CANONICAL_TO_KERAS",
    "EXPORT_LAYOUTS",
    "LAYOUTS",
    "LoadReport",
    "bicubic_matrix",
    "canonical_keys",
    "detect_layout",
    "from_canonical",
    "infer_2d_architecture",
    "infer_architecture",
    "inflate_2d_checkpoint",
    "is_2d_state_dict",
    "keras_path",
    "load_2d_state_dict",
    "load_state_dict",
    "model_architecture",
    "model_state_dict",
    "read_state_dict",
    "resize_bias_table",
    "to_canonical",
    "to_keras_array",
    "window_from_index",
    "window_from_table_rows",
]
