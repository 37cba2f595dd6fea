"""Swin-T on Kinetics-400, the paper's recipe (78.8 / 93.6 top-1/top-5 with 4x3 views).

Initialisation: the 2D ImageNet-1K Swin-T, inflated (paper section 3.4). Download
https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth
and pass `model.weights=swin_tiny_patch4_window7_224.pth`.

Shards: `keras-vswin write-shards --videos k400_train.csv --output shards/k400 --name train
--num-shards 1024 --labels kinetics400` (and `--name val` for the validation list).
"""

CONFIG = {
    "name": "swin_t_k400",
    "model": {
        "variant": "T",
        "window_size": [8, 7, 7],
        "drop_path_rate": 0.1,
        "head_dropout_rate": 0.5,
        "num_classes": 400,
    },
    "data": {
        "source": "tfrecord",
        "train": "shards/k400/train-*.tfrecord",
        "eval": "shards/k400/val-*.tfrecord",
        "labels": "kinetics400",
        # SampleFrames(32, 2) -> short side 256 -> RandomResizedCrop -> 224 -> flip 0.5.
        "clip_len": 32,
        "frame_interval": 2,
        "sampling": "dense",
        "crop_size": 224,
        "area_range": [0.08, 1.0],
        "flip": True,
        "label_smoothing": 0.0,
        # Validation: centre clip, short side 256, centre crop; test: 4 clips x 3 crops, 224.
        "eval_views": {"num_clips": 1, "num_crops": 1, "short_side": 256},
        "test_views": {"num_clips": 4, "num_crops": 3, "short_side": 224},
    },
    "optimizer": {
        "lr": 1e-3,
        "reference_batch_size": 64,
        "weight_decay": 0.02,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "backbone_lr_mult": 0.1,
    },
    "schedule": {"warmup_epochs": 2.5, "warmup_ratio": 0.1, "min_lr": 0.0, "by_epoch": True},
    "train": {
        "epochs": 30,
        "batch_size": 64,
        # 8 clips of 32x224x224 per 80 GB GPU in bfloat16; accumulation fills the batch of 64.
        "per_replica_batch_size": 8,
        "mixed_precision": "mixed_bfloat16",
        "backup_every": 500,
    },
}
