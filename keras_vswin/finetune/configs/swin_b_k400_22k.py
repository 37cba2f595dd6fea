"""Swin-B on Kinetics-400 from ImageNet-22K, the paper's recipe (82.7 / 95.5 with 4x3 views).

Initialisation: inflate
https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22k.pth
(`model.weights=...`).
"""

BASE = "swin_t_k400"
CONFIG = {
    "name": "swin_b_k400_22k",
    "model": {"variant": "B", "drop_path_rate": 0.2},
    "optimizer": {"lr": 3e-4, "weight_decay": 0.05},
}
