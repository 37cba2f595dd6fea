"""Swin-S on Kinetics-400, the paper's recipe (80.6 / 94.5 with 4x3 views).

Initialisation: inflate
https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth
(`model.weights=...`).
"""

BASE = "swin_t_k400"
CONFIG = {
    "name": "swin_s_k400",
    "model": {"variant": "S", "drop_path_rate": 0.1},
    "optimizer": {"lr": 1e-3, "weight_decay": 0.02},
}
