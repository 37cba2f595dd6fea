"""Check a conversion numerically: the Keras model against torchvision's Swin3D in PyTorch.

```
keras-vswin verify swin_tiny_patch244_window877_kinetics400_1k.pth
keras-vswin verify kinetics400 --variant B --frames 32 --size 224
keras-vswin verify ckpt.pth --converted ckpt.keras       # check a written file
```

Reads SRC (a checkpoint or registry name), builds torchvision's `SwinTransformer3d` with the
architecture inferred from it and loads the same state dict (renamed to torchvision's layout);
builds the Keras model by converting SRC (or loads `--converted`, a `.keras` or `.weights.h5`
written by `keras-vswin convert`); runs both on the same random clip and prints the largest
absolute difference of the logits (of the pooled features for checkpoints without head).
Exit status 1 when it exceeds `--tolerance`. Needs `torch` and `torchvision` (the `[torch]`
extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from keras_vswin.cli import add_checkpoint_arguments

torch = None


def _import_torch():
    """Import torch and torchvision; this must happen before TensorFlow is imported (the other
    order crashes torchvision's import), so `verify` does it before touching keras_vswin."""
    global torch
    if torch is None:
        try:
            import torch as torch_module
            import torchvision  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "conversion.verify needs torch and torchvision (the [torch] extra)."
            ) from None
        torch = torch_module
    return torch


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin verify",
        description="Compare Keras logits with torchvision's Swin3D on the same checkpoint.",
    )
    parser.add_argument("source", metavar="SRC", help=".pth/.pt checkpoint or registry name")
    parser.add_argument("--variant", choices=("T", "S", "B", "L"), help="for registry names")
    parser.add_argument(
        "--converted", help="a .keras or .weights.h5 written from SRC (default: convert SRC now)"
    )
    parser.add_argument("--layout", default=None, help="key layout (default: detected)")
    parser.add_argument("--frames", type=int, default=16, help="clip length (default 16)")
    parser.add_argument("--size", type=int, default=112, help="clip height and width (112)")
    parser.add_argument("--batch", type=int, default=1, help="clips per batch (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random clip")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest accepted |difference| (1e-4)"
    )
    add_checkpoint_arguments(parser)
    return parser


def _torch_model(arch, state_dict, layout):
    """torchvision's SwinTransformer3d with `arch`, holding `state_dict`."""
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    from keras_vswin import convert

    if not (arch["qkv_bias"] and arch["patch_norm"]):
        raise ValueError("torchvision's Swin3D always has qkv bias and patch norm; cannot verify.")
    model = SwinTransformer3d(
        patch_size=list(arch["patch_size"]),
        embed_dim=arch["embed_dim"],
        depths=list(arch["depths"]),
        num_heads=list(arch["num_heads"]),
        window_size=list(arch["window_size"]),
        mlp_ratio=arch["mlp_ratio"],
        stochastic_depth_prob=0.0,
        num_classes=arch["classes"] or 1,
    ).eval()
    renamed = convert.from_canonical(convert.to_canonical(state_dict, layout), "torchvision")
    tensors = {k: torch.from_numpy(v.copy()) for k, v in renamed.items()}
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("relative_position_index")]
    if arch["classes"] is None:
        missing = [k for k in missing if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"torchvision rejected the state dict: missing {missing}, unexpected "
            f"{result.unexpected_keys}"
        )
    return model


def _torch_outputs(model, clip, with_head):
    with torch.no_grad():
        x = torch.from_numpy(clip).permute(0, 4, 1, 2, 3)
        if with_head:
            return model(x).numpy()
        x = model.norm(model.features(model.pos_drop(model.patch_embed(x))))
        return torch.flatten(model.avgpool(x.permute(0, 4, 1, 2, 3)), 1).numpy()


def _keras_model(arch, state_dict, layout, converted):
    """The Keras model under test, returning logits (or pooled features without head)."""
    import keras

    from keras_vswin import convert, weights
    from keras_vswin.model import VideoSwin

    with_head = arch["classes"] is not None
    if converted is None:
        model, _, _ = weights.convert_state_dict(
            state_dict,
            layout=layout,
            classifier_activation=None,
            **({} if with_head else {"pooling": "avg"}),
        )
        return model
    if converted.endswith(".keras"):
        model = keras.saving.load_model(converted, compile=False)
        if with_head:  # compare logits: drop the head's activation (softmax) for the check
            model.get_layer("predictions").activation = keras.activations.get(None)
        elif len(model.output.shape) != 2:
            model = keras.Model(
                model.input, keras.layers.GlobalAveragePooling3D()(model.get_layer("norm").output)
            )
        return model
    model = VideoSwin(
        **{k: arch[k] for k in convert.MODEL_ARGUMENTS},
        include_top=with_head,
        classes=arch["classes"] or 400,
        classifier_activation=None,
        pooling=None if with_head else "avg",
    )
    model.load_weights(converted)
    return model


def verify(
    source,
    converted=None,
    layout=None,
    frames=16,
    size=112,
    batch=1,
    seed=0,
    variant=None,
    out=print,
    allow_unknown_globals=False,
):
    """Compare Keras and torchvision outputs for checkpoint `source`; returns a dict of figures.

    Keys: `max_abs_diff`, `max_abs_reference`, `compared` ("logits" or "pooled features"),
    `top1_agreement` (logits only), `architecture`, `seconds`.
    """
    _import_torch()
    import numpy as np

    from keras_vswin import convert, presets, weights

    if source in presets.PRESETS:
        variants = list(presets.PRESETS[source]["variants"])
        variant = variant or (variants[0] if len(variants) == 1 else None)
        if variant is None:
            raise ValueError(f"{source} exists for {variants}: choose one with --variant.")
        source, state_dict = weights.registry_checkpoint(source, variant)
    else:
        state_dict = None
    started = time.perf_counter()
    if state_dict is None:
        state_dict = convert.read_state_dict(source, allow_unknown_globals=allow_unknown_globals)
    arch = convert.infer_architecture(state_dict, layout)
    layout = arch["layout"]
    with_head = arch["classes"] is not None
    out(
        f"{os.path.basename(source)}: {layout} layout, embed_dim {arch['embed_dim']}, depths "
        f"{arch['depths']}, heads {arch['num_heads']}, window {arch['window_size']}, "
        f"classes {arch['classes']}"
    )
    reference = _torch_model(arch, state_dict, layout)
    model = _keras_model(arch, state_dict, layout, converted)
    del state_dict
    clip = np.random.default_rng(seed).standard_normal((batch, frames, size, size, 3))
    clip = clip.astype("float32")
    expected = _torch_outputs(reference, clip, with_head)
    got = np.asarray(model(clip, training=False))
    if got.shape != expected.shape:
        raise ValueError(f"output shapes differ: Keras {got.shape}, PyTorch {expected.shape}")
    result = dict(
        compared="logits" if with_head else "pooled features",
        max_abs_diff=float(np.abs(got - expected).max()),
        max_abs_reference=float(np.abs(expected).max()),
        architecture={k: arch[k] for k in (*convert.MODEL_ARGUMENTS, "classes", "layout")},
        seconds=time.perf_counter() - started,
    )
    if with_head:
        result["top1_agreement"] = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
    out(
        f"{result['compared']} on a {batch}x{frames}x{size}x{size} clip: max |Keras - PyTorch| "
        f"= {result['max_abs_diff']:.3g} (largest |value| {result['max_abs_reference']:.3g})"
        + (f", top-1 agreement {result['top1_agreement']:.0%}" if with_head else "")
    )
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = verify(
            args.source,
            converted=args.converted,
            layout=args.layout,
            frames=args.frames,
            size=args.size,
            batch=args.batch,
            seed=args.seed,
            variant=args.variant,
            allow_unknown_globals=args.allow_unknown_globals,
        )
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["max_abs_diff"] > args.tolerance:
        print(f"FAILED: difference above the tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    print(f"OK (tolerance {args.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
