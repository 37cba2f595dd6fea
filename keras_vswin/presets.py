"""Pretrained Video Swin weights: one data table of what exists, where, and what it needs.

`PRESETS[name]` describes one released training run (data, labels, the test-time
`ViewProtocol` its accuracy was measured with, normalisation, window) and, under `variants`,
one checkpoint per model size ("T", "S", "B", as in `keras_vswin.model.VARIANTS`) with its
URL, pretraining and the accuracy the authors report.
`keras_vswin.weights` downloads and converts them; nothing else reads URLs.

`sha256` is the file's full SHA-256 where a public source lists it (a benchmark table that
evaluated two official files), else None. torchvision's file names carry the first 8 hex digits
of theirs (`swin3d_t-7615ae03.pth`, torch.hub's convention), which `keras_vswin.weights` checks
too. A file without either is recorded at its first download and checked against that record on
every later use.
"""

from keras_vswin.data.views import KINETICS, SSV2, TORCHVISION_KINETICS
from keras_vswin.preprocessing import MEAN_RGB, STD_RGB

OFFICIAL = "https://github.com/SwinTransformer/storage/releases/download/v1.0.4/"
TORCHVISION = "https://download.pytorch.org/models/"

# Every release expects RGB input in 0-255 normalised with the official statistics.
NORMALISATION = dict(mean=MEAN_RGB, std=STD_RGB)

PRESETS = {
    "kinetics400": {
        "description": "Kinetics-400 classifier, ImageNet-1K pretrained backbone (official).",
        "labels": "kinetics400",
        "classes": 400,
        "window_size": (8, 7, 7),
        "protocol": KINETICS,
        "preprocessing": NORMALISATION,
        "variants": {
            "T": dict(
                url=OFFICIAL + "swin_tiny_patch244_window877_kinetics400_1k.pth",
                pretrain="ImageNet-1K",
                top1=78.8,
                top5=93.6,
                sha256="9950e3be6b0b3763f80575dfbbe7db7cbeb18345e32363b73e8d44952ef76acc",
            ),
            "S": dict(
                url=OFFICIAL + "swin_small_patch244_window877_kinetics400_1k.pth",
                pretrain="ImageNet-1K",
                top1=80.6,
                top5=94.5,
                sha256=None,
            ),
            "B": dict(
                url=OFFICIAL + "swin_base_patch244_window877_kinetics400_1k.pth",
                pretrain="ImageNet-1K",
                top1=80.6,
                top5=94.6,
                sha256=None,
            ),
        },
    },
    "kinetics400_imagenet22k": {
        "description": "Kinetics-400 classifier, ImageNet-22K pretrained backbone (official).",
        "labels": "kinetics400",
        "classes": 400,
        "window_size": (8, 7, 7),
        "protocol": KINETICS,
        "preprocessing": NORMALISATION,
        "variants": {
            "B": dict(
                url=OFFICIAL + "swin_base_patch244_window877_kinetics400_22k.pth",
                pretrain="ImageNet-22K",
                top1=82.7,
                top5=95.5,
                sha256=None,
            ),
        },
    },
    "kinetics600_imagenet22k": {
        "description": "Kinetics-600 classifier, ImageNet-22K pretrained backbone (official).",
        "labels": "kinetics600",
        "classes": 600,
        "window_size": (8, 7, 7),
        "protocol": KINETICS,
        "preprocessing": NORMALISATION,
        "variants": {
            "B": dict(
                url=OFFICIAL + "swin_base_patch244_window877_kinetics600_22k.pth",
                pretrain="ImageNet-22K",
                top1=84.0,
                top5=96.5,
                sha256=None,
            ),
        },
    },
    "something_something_v2": {
        "description": "Something-Something V2 classifier, window 16x7x7, from Kinetics-400 "
        "(ImageNet-22K) weights (official).",
        "labels": "something_something_v2",
        "classes": 174,
        "window_size": (16, 7, 7),
        "protocol": SSV2,
        "preprocessing": NORMALISATION,
        "variants": {
            "B": dict(
                url=OFFICIAL + "swin_base_patch244_window1677_sthv2.pth",
                pretrain="Kinetics-400 (ImageNet-22K)",
                top1=69.6,
                top5=92.7,
                sha256="f7fe417a0659680ab9db4f5e02c39b3f2825b58f0e244d4fbe3de6658fe135fc",
            ),
        },
    },
    # torchvision's ports of the same official weights (its own evaluation protocol: 12 clips
    # per video, centre crop; it reports lower numbers than the paper's 4x3 views).
    "kinetics400_torchvision": {
        "description": "torchvision's port of the official Kinetics-400 (ImageNet-1K) weights.",
        "labels": "kinetics400",
        "classes": 400,
        "window_size": (8, 7, 7),
        "protocol": TORCHVISION_KINETICS,
        "preprocessing": NORMALISATION,
        "variants": {
            "T": dict(
                url=TORCHVISION + "swin3d_t-7615ae03.pth",
                pretrain="ImageNet-1K",
                top1=77.7,
                top5=93.5,
                sha256=None,
            ),
            "S": dict(
                url=TORCHVISION + "swin3d_s-da41c237.pth",
                pretrain="ImageNet-1K",
                top1=79.5,
                top5=94.2,
                sha256=None,
            ),
            "B": dict(
                url=TORCHVISION + "swin3d_b_1k-24f7c7c6.pth",
                pretrain="ImageNet-1K",
                top1=79.4,
                top5=94.4,
                sha256=None,
            ),
        },
    },
    "kinetics400_imagenet22k_torchvision": {
        "description": "torchvision's port of the official Kinetics-400 (ImageNet-22K) weights.",
        "labels": "kinetics400",
        "classes": 400,
        "window_size": (8, 7, 7),
        "protocol": TORCHVISION_KINETICS,
        "preprocessing": NORMALISATION,
        "variants": {
            "B": dict(
                url=TORCHVISION + "swin3d_b_22k-7c6ae6fa.pth",
                pretrain="ImageNet-22K",
                top1=81.6,
                top5=95.6,
                sha256=None,
            ),
        },
    },
}
