"""Swin-B on Kinetics-400 from ImageNet-1K, the paper's recipe (80.6 / 94.6 with 4x3 views).

Initialisation: inflate
https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224.pth
(`model.weights=...`).
"""

BASE = "swin_t_k400"
CONFIG = {
    "name": "swin_b_k400",
    "model": {"variant": "B", "drop_path_rate": 0.3},
    "optimizer": {"lr": 1e-3, "weight_decay": 0.05},
}
