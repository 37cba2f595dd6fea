"""Swin-B on Kinetics-600 from ImageNet-22K, the paper's recipe (84.0 / 96.5 with 4x3 views).

Initialisation: inflate
https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth
(`model.weights=...`). Shards: as for Kinetics-400 with `--labels kinetics600`.
"""

BASE = "swin_t_k400"
CONFIG = {
    "name": "swin_b_k600_22k",
    "model": {"variant": "B", "drop_path_rate": 0.2, "num_classes": 600},
    "data": {
        "train": "shards/k600/train-*.tfrecord",
        "eval": "shards/k600/val-*.tfrecord",
        "labels": "kinetics600",
    },
    "optimizer": {"lr": 3e-4, "weight_decay": 0.05},
}
