"""Swin-B on Something-Something v2, the paper's recipe (69.6 / 92.7 with 1x3 views).

Window 16x7x7, segment-uniform sampling of 32 frames, no flip (left/right matters in SSv2),
RandAugment(4, 7), random erasing 0.25, label smoothing 0.1, 60 epochs, drop path 0.4.

Initialisation: the Kinetics-400 (ImageNet-22K) Swin-B with window 16x7x7,
https://github.com/SwinTransformer/storage/releases/download/v1.0.4/swin_base_patch244_window1677_kinetics400_22k.pth
(`model.weights=swin_base_patch244_window1677_kinetics400_22k.pth`; its 400-class head is
replaced by a new 174-class head).
"""

BASE = "swin_t_k400"
CONFIG = {
    "name": "swin_b_ssv2",
    "model": {
        "variant": "B",
        "window_size": [16, 7, 7],
        "drop_path_rate": 0.4,
        "num_classes": 174,
    },
    "data": {
        "train": "shards/ssv2/train-*.tfrecord",
        "eval": "shards/ssv2/val-*.tfrecord",
        "labels": "something_something_v2",
        "clip_len": 32,
        "frame_interval": 1,
        "sampling": "uniform",
        "flip": False,
        "rand_augment": [4, 7],
        "random_erasing": 0.25,
        "label_smoothing": 0.1,
        "test_views": {"num_clips": 1, "num_crops": 3, "short_side": 224},
    },
    "optimizer": {"lr": 3e-4, "weight_decay": 0.05},
    "train": {"epochs": 60},
}
