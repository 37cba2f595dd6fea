"""Video Swin Transformer layers, written with `keras.ops` (portable across backends).

All tensors are channels-last: `(batch, frames, height, width, channels)`.
"""

from __future__ import annotations

import contextlib
import contextvars

import keras
import numpy as np
from keras import ops

from keras_vswin import windows as win

PACKAGE = "keras_vswin"
LAYER_NORM_EPSILON = 1e-5  # the official models use PyTorch's default, not Keras' 1e-3


def gelu(x):
    """Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))`, the official models' activation.

    On TensorFlow written out with erf: TensorFlow's own exact GELU computes `erfc`, which has
    no ONNX operator (tf2onnx then writes an invalid graph); grappler fuses this form into the
    preceding MatMul as it does its own (same speed, same values on CPU). Other backends keep
    their own exact GELU: one kernel on PyTorch, 4.9x faster than the formula's five.
    """
    if keras.backend.backend() == "tensorflow":
        return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))
    return keras.activations.gelu(x, approximate=False)


def _dense_init():
    return keras.initializers.TruncatedNormal(stddev=0.02)


def _triple(value, name):
    if isinstance(value, int):
        value = (value,) * 3
    value = tuple(value)
    if len(value) != 3 or not all(isinstance(v, int | np.integer) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or 3 positive ints (frames, height, width), "
            f"got {value!r}."
        )
    return tuple(int(v) for v in value)


def _is_static(dims):
    return all(isinstance(d, int) for d in dims)


def _pad_end(x, amounts):
    """Zero-pad axes 1..3 of `(batch, D, H, W, C)` at their end by `amounts`."""
    if _is_static(amounts) and not any(amounts):
        return x
    return ops.pad(x, [[0, 0], [0, amounts[0]], [0, amounts[1]], [0, amounts[2]], [0, 0]])


def _pad_amounts(extent, multiple):
    return [(-e) % m if isinstance(e, int) else (m - e % m) % m for e, m in zip(extent, multiple)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerNorm(keras.layers.LayerNormalization):
    """`LayerNormalization` over the last axis, same weights and results, fewer passes.

    Keras' version broadcasts `rsqrt(var) * gamma` to the full tensor and makes about eight
    passes over it; this one centres once and reuses the centred tensor (about 40% faster on
    CPU). Half-precision inputs are normalised in float32, as Keras does.
    """

    def __init__(self, epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(epsilon=epsilon, **kwargs)

    def call(self, inputs):
        if self.rms_scaling or not self.center or not self.scale or self.axis != [-1]:
            return super().call(inputs)
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        centred = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
        gamma = ops.cast(self.gamma, x.dtype)
        outputs = ops.cast(self.beta, x.dtype) + centred * (
            ops.rsqrt(variance + self.epsilon) * gamma
        )
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class StochasticDepth(keras.layers.Layer):
    """Drops the whole residual branch per sample with probability `rate` (training only)."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1), got {rate!r}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def sample_scale(self, batch, rank, dtype):
        """Per-sample factor `(batch, 1, ...)`: 0 (dropped) or 1 / (1 - rate) (kept)."""
        keep = 1.0 - self.rate
        draw = keras.random.uniform((batch,) + (1,) * (rank - 1), seed=self.seed_generator)
        return ops.cast(ops.floor(keep + draw) / keep, dtype)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        return x * self.sample_scale(ops.shape(x)[0], len(x.shape), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchEmbedding3D(keras.layers.Layer):
    """Clip -> patch tokens: zero-pad the end to multiples of the patch, Conv3D, LayerNorm.

    Input `(batch, frames, height, width, 3)`; output
    `(batch, ceil(frames/pt), ceil(height/ph), ceil(width/pw), embed_dim)`.
    """

    def __init__(self, patch_size=(2, 4, 4), embed_dim=96, patch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = _triple(patch_size, "patch_size")
        self.embed_dim = int(embed_dim)
        self.patch_norm = bool(patch_norm)
        self.proj = keras.layers.Conv3D(
            self.embed_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            dtype=self.dtype_policy,
            name="proj",
        )
        self.norm = LayerNorm(dtype=self.dtype_policy, name="norm") if self.patch_norm else None

    def build(self, input_shape):
        self.proj.build(tuple(input_shape))
        if self.norm is not None:
            self.norm.build(tuple(input_shape[:-1]) + (self.embed_dim,))

    def call(self, x):
        shape = ops.shape(x)
        x = _pad_end(x, _pad_amounts(shape[1:4], self.patch_size))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x)
        return x

    def compute_output_shape(self, input_shape):
        grid = [
            None if e is None else -(-e // p) for e, p in zip(input_shape[1:4], self.patch_size)
        ]
        return (input_shape[0], *grid, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "patch_norm": self.patch_norm,
        }


# Window chunks bound the memory of the attention logits (heads x windows x N x N floats; 315 MB
# per Swin-B block at 32x224x224, plus as much for the softmax): Swin-B 32x224x224 inference
# peaks at 2295 MiB with 16 MB chunks, 2599 MiB without. On a 2-core EPYC, Swin-T 16x224x224
# ran equally fast with 6-64 MB chunks and unchunked; 2 MB chunks (many small ops) cost 8%.
ATTENTION_CHUNK_BYTES = 16 * 2**20
MAX_ATTENTION_CHUNKS = 64  # each chunk is a few graph ops; bounds the graph size


def attention_chunks(num_windows, num_heads, num_tokens):
    """How many chunks (a divisor of `num_windows`) a clip's window attention runs in."""
    per_window = num_heads * num_tokens * num_tokens * 4
    least = max(1, -(-num_windows // MAX_ATTENTION_CHUNKS))
    for size in range(max(least, ATTENTION_CHUNK_BYTES // per_window), num_windows + 1):
        if num_windows % size == 0:
            return num_windows // size
    return 1


_RUNTIME_FORM = contextvars.ContextVar("keras_vswin_runtime_attention", default=False)


@contextlib.contextmanager
def runtime_attention_form():
    """Within this context, inference calls of `WindowAttention3D` build the graph form that
    runtimes' graph compilers fuse into one attention kernel (used by the runtime exports).

    The form is the BERT layout, `(windows, heads, N, head_dim)` queries, keys and values, each
    a reshape and a (0, 2, 1, 3) transpose of the qkv projection; bias and shift mask are added
    to the rank-4 logits by broadcasting, and windows are not chunked. OpenVINO's CPU plugin then
    runs each block's scale, bias, mask, softmax and both matmuls as one fused kernel (its MHA
    snippet) and folds the transposes into it; of the TensorFlow form (heads first, mask added
    on flattened logits, window chunks) it left a shifted block's attention in five separate
    passes over the logits. Same values as the TensorFlow form, to float32 round-off.
    """
    token = _RUNTIME_FORM.set(True)
    try:
        yield
    finally:
        _RUNTIME_FORM.reset(token)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WindowAttention3D(keras.layers.Layer):
    """Multi-head self-attention inside 3D windows with a relative position bias.

    Input: windows `(batch * num_windows, N, dim)` with `N <= wd * wh * ww` (a clipped window
    uses `index[:N, :N]` of the configured window's relative index, as the official code does).
    `attention_mask`: optional `(num_windows, N, N)` added to the logits.
    """

    def __init__(
        self,
        dim,
        num_heads,
        window_size=(8, 7, 7),
        qkv_bias=True,
        attention_dropout=0.0,
        projection_dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads}).")
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.window_size = _triple(window_size, "window_size")
        self.qkv_bias = bool(qkv_bias)
        self.attention_dropout = float(attention_dropout)
        self.projection_dropout = float(projection_dropout)
        self.head_dim = self.dim // self.num_heads
        self.scale = self.head_dim**-0.5
        policy = self.dtype_policy
        self.qkv = keras.layers.Dense(
            3 * self.dim,
            use_bias=self.qkv_bias,
            kernel_initializer=_dense_init(),
            dtype=policy,
            name="qkv",
        )
        self.proj = keras.layers.Dense(
            self.dim, kernel_initializer=_dense_init(), dtype=policy, name="proj"
        )
        self.attn_drop = keras.layers.Dropout(self.attention_dropout, dtype=policy)
        self.proj_drop = keras.layers.Dropout(self.projection_dropout, dtype=policy)
        self._codes, self._center = win.relative_position_codes(self.window_size)
        self._plane_index, self._width_index = win.relative_position_factors(self.window_size)

    def build(self, input_shape):
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=(win.bias_table_size(self.window_size), self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.qkv.build(input_shape)
        self.proj.build(tuple(input_shape[:-1]) + (self.dim,))

    def relative_position_bias(self, num_tokens, anchor=None):
        """Bias `(heads, N, N)` for windows of `num_tokens` tokens.

        `anchor`: a scalar computed from this call's data, 0 (or NaN when the data is NaN).
        Adding it to the table makes the gather wait for the data; otherwise a graph executor
        gathers every block's bias as soon as the graph starts and holds them all (about
        230 MB for Swin-B on 32x224x224).
        """
        table = self.relative_position_bias_table
        if anchor is not None:
            table = table + ops.cast(anchor, table.dtype)
        if isinstance(num_tokens, int) and num_tokens == int(np.prod(self.window_size)):
            return self._full_window_bias(table)
        # The official `index[:N, :N]` of the configured window, from the first N token codes.
        if isinstance(num_tokens, int):
            codes = self._codes[:num_tokens]
        else:
            codes = ops.slice(self._codes, (0,), ops.reshape(num_tokens, (1,)))
        index = ops.reshape(codes[:, None] - codes[None, :] + self._center, (-1,))
        bias = ops.take(table, index, axis=0)
        bias = ops.reshape(bias, (num_tokens, num_tokens, self.num_heads))
        return ops.transpose(bias, (2, 0, 1))

    def _full_window_bias(self, table):
        """The bias of full windows, gathered in two levels: first the width offsets of each
        (depth, height) offset row of the table, a small tensor; then, per head and for every
        pair of (depth, height) positions, a block of `ww * ww` values.

        Same values as one gather of `N * N` rows, but the table's gradient stays dense: a
        gather's gradient is sparse, and the optimizer's de-duplication of N * N rows of `heads`
        values (UnsortedSegmentSum) cost 74 ms of a 2.1 s Swin-T training step. In inference
        the bias also costs less: 8-9 ms per Swin-T 16x224 forward, was about 11 ms.
        """
        wd, wh, ww = self.window_size
        table = ops.reshape(table, ((2 * wd - 1) * (2 * wh - 1), 2 * ww - 1, self.num_heads))
        # Heads first from the start: the last transpose then moves runs of `ww` values, not
        # single ones (2.6x faster with 24 heads).
        table = ops.transpose(table, (2, 0, 1))
        table = ops.take(table, self._width_index, axis=2)  # (heads, rows, ww, ww)
        bias = ops.take(table, self._plane_index, axis=1)  # (heads, P * P, ww, ww), P = wd * wh
        planes = wd * wh
        bias = ops.reshape(bias, (self.num_heads, planes, planes, ww, ww))
        bias = ops.transpose(bias, (0, 1, 3, 2, 4))  # (heads, query plane, w, key plane, w)
        return ops.reshape(bias, (self.num_heads, planes * ww, planes * ww))

    def _attention_weights(self, q, k, bias, attention_mask):
        """Softmax weights `(heads, windows, N, N)` of `(heads, windows, N, head_dim)` q, k."""
        num_tokens = ops.shape(q)[2]
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * self.scale + bias
        if attention_mask is not None:
            # Flattened so the add is a plain row broadcast (and stays a separate, in-place
            # add: a combined bias + mask would be as large as the logits).
            num_windows = ops.shape(attention_mask)[0]
            logits = ops.reshape(logits, (self.num_heads, -1, num_windows * num_tokens**2))
            logits = logits + ops.cast(ops.reshape(attention_mask, (1, 1, -1)), logits.dtype)
            logits = ops.reshape(logits, (self.num_heads, -1, num_tokens, num_tokens))
        if isinstance(num_tokens, int) and num_tokens == 1:
            return ops.ones_like(logits)  # one-token windows (tiny clips): softmax of one logit
        return ops.softmax(logits, axis=-1)

    def _attend(self, q, k, v, bias, attention_mask, training):
        """Softmax attention of `(heads, windows, N, head_dim)` queries, keys and values."""
        # Training takes the hand-written gradient on every backend, checked against each
        # backend's autodiff (tests/test_model.py, tests/test_backends.py). The mask, closed
        # over, never depends on weights: it needs no gradient, and JAX's custom_vjp accepts it
        # as a closed-over jit tracer. On JAX a Swin-T 16x112x112 training step then moves 12%
        # fewer bytes (XLA's cost analysis) and takes about 5% less CPU time.
        if training and not self.attention_dropout:
            return self._attend_with_short_gradient(q, k, v, bias, attention_mask)
        attn = self._attention_weights(q, k, bias, attention_mask)
        attn = self.attn_drop(attn, training=training)
        return ops.matmul(attn, v)

    def _attend_with_short_gradient(self, q, k, v, bias, attention_mask):
        """`_attend` whose gradient makes 3 passes over the `(heads, windows, N, N)` logits
        instead of 6 (softmax: 4, scale, bias sum): a Swin-T 16x224 training step went from
        1.97-1.99 s to 1.89-1.93 s on a 2-core CPU.

        The softmax gradient's row sums `sum_j attn_ij * d_attn_ij` equal `d_out_i . out_i`,
        a product of `(N, head_dim)` tensors, and the scale is applied to dq and dk.
        """
        scale = self.scale

        @ops.custom_gradient
        def attend(q, k, v, bias):
            attn = self._attention_weights(q, k, bias, attention_mask)
            out = ops.matmul(attn, v)

            def grad(*args, upstream=None):
                d_out = args[0] if upstream is None else upstream
                d_v = ops.matmul(ops.transpose(attn, (0, 1, 3, 2)), d_out)
                d_attn = ops.matmul(d_out, ops.transpose(v, (0, 1, 3, 2)))
                rows = ops.sum(d_out * out, axis=-1, keepdims=True)
                d_logits = attn * (d_attn - rows)
                d_bias = ops.sum(d_logits, axis=1, keepdims=True)
                d_q = ops.matmul(d_logits, k) * scale
                d_k = ops.matmul(ops.transpose(d_logits, (0, 1, 3, 2)), q) * scale
                return d_q, d_k, d_v, d_bias

            return out, grad

        return attend(q, k, v, bias)

    def call(self, windows, attention_mask=None, num_windows=None, training=None):
        """`num_windows`: windows per clip, a Python int when the grid is static. It lets the
        attention run in window chunks (see `attention_chunks`); the result is the same."""
        if not training and _RUNTIME_FORM.get():
            return self._runtime_form(windows, attention_mask)
        shape = ops.shape(windows)
        num_tokens = shape[1]
        chunks = 1
        if isinstance(num_windows, int) and isinstance(num_tokens, int):
            chunks = attention_chunks(num_windows, self.num_heads, num_tokens)
        if chunks > 1:
            # Split the input, not qkv (three times larger): for one clip, a split along
            # axis 1 is a view, not a copy.
            parts = ops.split(
                ops.reshape(windows, (-1, num_windows, num_tokens * self.dim)), chunks, axis=1
            )
            masks = [None] * chunks
            if attention_mask is not None:
                masks = ops.split(attention_mask, chunks, axis=0)
        else:
            parts, masks = [windows], [attention_mask]
        bias, outputs = None, []
        for part, mask in zip(parts, masks):
            # Dense layers on 2D token matrices: a plain MatMul + bias, which TF fuses and runs
            # markedly faster than the tensordot a rank-3 Dense input becomes.
            qkv = self.qkv(ops.reshape(part, (-1, self.dim)))
            qkv = ops.reshape(qkv, (-1, num_tokens, 3, self.num_heads, self.head_dim))
            # Heads first, `(heads, windows, N, head_dim)`: the bias `(heads, 1, N, N)` then
            # broadcasts over axis 1, the one form oneDNN fuses into the logits matmul
            # together with the scale (one pass over the logits instead of three).
            qkv = ops.transpose(qkv, (2, 3, 0, 1, 4))
            # unstack, not indexing: its gradient is one stack, not three full-size
            # zero-padded slices summed (12% of a Swin-T training step).
            q, k, v = ops.unstack(qkv, num=3, axis=0)
            if bias is None:
                anchor = ops.stop_gradient(ops.sum(q[:1, :1, :1, :1])) * 0.0
                bias = ops.cast(self.relative_position_bias(num_tokens, anchor), q.dtype)
                # (heads, 1, N, N); expand_dims, not `[:, None]`: the indexing's gradient is
                # a StridedSliceGrad pass over the whole bias.
                bias = ops.expand_dims(bias, 1)
            out = self._attend(q, k, v, bias, mask, training)
            out = ops.transpose(out, (1, 2, 0, 3))  # (windows, N, heads, head_dim)
            out = self.proj(ops.reshape(out, (-1, self.dim)))
            if chunks > 1:  # back to (batch, chunk tokens * dim), the split's layout
                out = ops.reshape(out, (-1, num_windows // chunks * num_tokens * self.dim))
            outputs.append(out)
        out = outputs[0] if chunks == 1 else ops.concatenate(outputs, axis=1)
        out = ops.reshape(out, (-1, num_tokens, self.dim))
        return self.proj_drop(out, training=training)

    def _runtime_form(self, windows, attention_mask):
        """Inference `call` in the form runtimes fuse (see `runtime_attention_form`)."""
        shape = ops.shape(windows)
        num_tokens = shape[1]
        tokens = ops.reshape(windows, (-1, self.dim))

        def heads(i):  # projection i of (q, k, v) -> (windows, heads, N, head_dim)
            # One matmul per projection, on slices of the kernel (constants once exported):
            # slicing the qkv output instead costs a strided copy of each (60 ms per Swin-T
            # 16x224 forward in OpenVINO).
            columns = slice(i * self.dim, (i + 1) * self.dim)
            part = ops.matmul(tokens, ops.cast(self.qkv.kernel[:, columns], tokens.dtype))
            if self.qkv_bias:
                part = part + ops.cast(self.qkv.bias[columns], tokens.dtype)
            part = ops.reshape(part, (-1, num_tokens, self.num_heads, self.head_dim))
            return ops.transpose(part, (0, 2, 1, 3))

        q, k, v = (heads(i) for i in range(3))
        # The anchor keeps the bias a run-time gather, as in `call`: folded into constants it
        # would grow an OpenVINO Swin-T file by 108 MB (heads * N * N floats per block).
        anchor = ops.sum(q[:1, :1, :1, :1]) * 0.0
        bias = ops.cast(self.relative_position_bias(num_tokens, anchor), q.dtype)
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * self.scale
        logits = logits + ops.expand_dims(bias, 0)
        if attention_mask is not None:
            # (num_windows, N, N) -> (batch * num_windows, 1, N, N): a rank-4 broadcast add.
            mask = ops.cast(attention_mask, logits.dtype)
            repeats = shape[0] // ops.shape(mask)[0]
            if not isinstance(repeats, int) or repeats != 1:
                mask = ops.tile(mask, (repeats, 1, 1))
            logits = logits + ops.expand_dims(mask, 1)
        if isinstance(num_tokens, int) and num_tokens == 1:
            attn = ops.ones_like(logits)
        else:
            attn = ops.softmax(logits, axis=-1)
        out = ops.transpose(ops.matmul(attn, v), (0, 2, 1, 3))  # (windows, N, heads, head_dim)
        out = self.proj(ops.reshape(out, (-1, self.dim)))
        return ops.reshape(out, (-1, num_tokens, self.dim))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "window_size": self.window_size,
            "qkv_bias": self.qkv_bias,
            "attention_dropout": self.attention_dropout,
            "projection_dropout": self.projection_dropout,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class SwinBlock3D(keras.layers.Layer):
    """One Video Swin block: `x + DropPath(W-MSA(norm1(x)))`, then `x + DropPath(MLP(norm2(x)))`.

    `shift_size` is `(0, 0, 0)` for regular blocks and `window_size // 2` for shifted ones. The
    window and shift actually used depend on the token grid (see `windows.effective_window`).
    Input and output: `(batch, D, H, W, dim)`.
    """

    def __init__(
        self,
        dim,
        num_heads,
        window_size=(8, 7, 7),
        shift_size=(0, 0, 0),
        mlp_ratio=4.0,
        qkv_bias=True,
        dropout=0.0,
        attention_dropout=0.0,
        drop_path=0.0,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.window_size = _triple(window_size, "window_size")
        self.remat = bool(remat)
        if self.remat and (dropout or attention_dropout):
            raise ValueError(
                "`remat=True` needs `dropout=0` and `attention_dropout=0` (recomputation would "
                "draw new dropout masks); stochastic depth (`drop_path`) is supported."
            )
        self.shift_size = tuple(int(s) for s in shift_size)
        if len(self.shift_size) != 3 or any(
            not 0 <= s < w for s, w in zip(self.shift_size, self.window_size)
        ):
            raise ValueError(
                f"`shift_size` must be 3 ints in [0, window) for window_size "
                f"{self.window_size}, got {shift_size!r}."
            )
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.drop_path = float(drop_path)
        policy = self.dtype_policy
        hidden = int(self.dim * self.mlp_ratio)
        self.norm1 = LayerNorm(dtype=policy, name="norm1")
        self.attn = WindowAttention3D(
            self.dim,
            self.num_heads,
            self.window_size,
            qkv_bias=self.qkv_bias,
            attention_dropout=self.attention_dropout,
            projection_dropout=self.dropout,
            dtype=policy,
            name="attn",
        )
        self.norm2 = LayerNorm(dtype=policy, name="norm2")
        self.fc1 = keras.layers.Dense(
            hidden, kernel_initializer=_dense_init(), dtype=policy, name="fc1"
        )
        self.fc2 = keras.layers.Dense(
            self.dim, kernel_initializer=_dense_init(), dtype=policy, name="fc2"
        )
        self.mlp_drop = keras.layers.Dropout(self.dropout, dtype=policy)
        self.drop_path_layer = StochasticDepth(self.drop_path, dtype=policy)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.norm1.build(input_shape)
        self.attn.build((None, None, self.dim))
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(input_shape[:-1] + (int(self.dim * self.mlp_ratio),))

    def _attention(self, x, attention_mask, training):
        shape = ops.shape(x)
        grid = tuple(shape[1:4])
        window, shift, padded, shifted = win.window_geometry(
            grid, self.window_size, self.shift_size
        )
        x = _pad_end(x, [p - g for p, g in zip(padded, grid)])
        if shifted:
            x = ops.roll(x, [-s for s in shift], axis=(1, 2, 3))
            if attention_mask is None:
                attention_mask = win.attention_mask(grid, self.window_size, self.shift_size)
        else:
            attention_mask = None
        windows = win.window_partition(x, window)
        num_windows = None
        if _is_static(padded):
            num_windows = int(np.prod(padded)) // int(np.prod(window))
        windows = self.attn(
            windows, attention_mask=attention_mask, num_windows=num_windows, training=training
        )
        x = win.window_reverse(windows, window, padded)
        if shifted:
            x = ops.roll(x, list(shift), axis=(1, 2, 3))
        if not (_is_static(grid) and tuple(padded) == grid):
            x = ops.slice(x, (0, 0, 0, 0, 0), (shape[0], *grid, self.dim))
        return x

    def _forward(self, x, attention_mask, attention_scale, mlp_scale, training):
        shape = ops.shape(x)
        branch = self._attention(self.norm1(x), attention_mask, training)
        x = x + (branch if attention_scale is None else branch * attention_scale)
        # The MLP runs on the (tokens, channels) matrix; see WindowAttention3D.call.
        tokens = ops.reshape(x, (-1, self.dim))
        hidden = gelu(self.fc1(self.norm2(tokens)))
        y = self.mlp_drop(self.fc2(self.mlp_drop(hidden, training=training)), training=training)
        if mlp_scale is not None:
            return x + ops.reshape(y, shape) * mlp_scale
        # A 2D residual add right after the Dense: oneDNN fuses it into the matmul.
        return ops.reshape(y + tokens, shape)

    def call(self, x, attention_mask=None, training=None):
        """`attention_mask`: the stage's `ShiftedWindowMask3D` output, so shifted blocks share
        one mask; computed here when not given. Ignored by blocks that do not shift."""
        scales = (None, None)
        if training and self.drop_path > 0:
            # Drawn outside the rematerialised function so recomputation sees the same draws.
            batch, rank = ops.shape(x)[0], len(x.shape)
            scales = tuple(self.drop_path_layer.sample_scale(batch, rank, x.dtype) for _ in "ab")
        if self.remat and training:

            def forward(x, *scales):
                return self._forward(x, attention_mask, *(scales or (None, None)), training)

            return keras.remat(forward)(x, *(s for s in scales if s is not None))
        return self._forward(x, attention_mask, *scales, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "window_size": self.window_size,
            "shift_size": self.shift_size,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "drop_path": self.drop_path,
            "remat": self.remat,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ShiftedWindowMask3D(keras.layers.Layer):
    """The shifted-window attention mask of a stage, computed once for all its shifted blocks.

    Input: the stage's tokens `(batch, D, H, W, C)` (only their grid is used). Output: float32
    `(num_windows, N, N)`, 0 within a shift region and -100 across regions.
    """

    def __init__(self, window_size=(8, 7, 7), shift_size=(4, 3, 3), **kwargs):
        super().__init__(**kwargs)
        self.window_size = _triple(window_size, "window_size")
        self.shift_size = tuple(int(s) for s in shift_size)

    def call(self, x):
        return win.attention_mask(tuple(ops.shape(x)[1:4]), self.window_size, self.shift_size)

    def compute_output_shape(self, input_shape):
        grid = tuple(input_shape[1:4])
        if not all(isinstance(e, int) for e in grid):
            return (None, None, None)
        window, _, padded, _ = win.window_geometry(grid, self.window_size, self.shift_size)
        tokens = int(np.prod(window))
        return (int(np.prod(padded)) // tokens, tokens, tokens)

    def get_config(self):
        return {
            **super().get_config(),
            "window_size": self.window_size,
            "shift_size": self.shift_size,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchMerging3D(keras.layers.Layer):
    """Halve height and width: concat 2x2 neighbours, LayerNorm(4C), Dense(4C -> 2C, no bias).

    Odd heights/widths are zero-padded at the end. Frames are not downsampled. Neighbours are
    concatenated in the official order (even h, even w), (odd h, even w), (even h, odd w),
    (odd h, odd w).
    """

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.norm = LayerNorm(dtype=self.dtype_policy, name="norm")
        self.reduction = keras.layers.Dense(
            2 * self.dim,
            use_bias=False,
            kernel_initializer=_dense_init(),
            dtype=self.dtype_policy,
            name="reduction",
        )

    def build(self, input_shape):
        merged = tuple(input_shape[:-1]) + (4 * self.dim,)
        self.norm.build(merged)
        self.reduction.build(merged)

    def call(self, x):
        shape = ops.shape(x)
        batch, frames, height, width = shape[0], shape[1], shape[2], shape[3]
        x = _pad_end(x, [0, *_pad_amounts((height, width), (2, 2))])
        half_h, half_w = (height + 1) // 2, (width + 1) // 2
        # Batch, frames and row pairs merged into one axis: 5 dimensions, not 7 (the TFLite
        # converter's builtin transpose takes at most 6).
        x = ops.reshape(x, (-1, 2, half_w, 2, self.dim))
        # (h parity, w parity) -> order (0,0), (1,0), (0,1), (1,1): w parity is the slower axis.
        x = ops.transpose(x, (0, 2, 3, 1, 4))
        # Norm and reduction on the (tokens, 4C) matrix: a Dense on a 5D input becomes a
        # tensordot whose run-time reshapes lose the static shape (see WindowAttention3D.call).
        x = self.reduction(self.norm(ops.reshape(x, (-1, 4 * self.dim))))
        return ops.reshape(x, (batch, frames, half_h, half_w, 2 * self.dim))

    def compute_output_shape(self, input_shape):
        h, w = (None if e is None else -(-e // 2) for e in input_shape[2:4])
        return (input_shape[0], input_shape[1], h, w, 2 * self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}
