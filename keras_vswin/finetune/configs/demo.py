"""The demo: a small Video Swin trained on the synthetic moving-shapes dataset on a CPU.

`python -m training.demo` generates the dataset (`keras_vswin.data.synthetic`, 8 classes that are
time reversals of each other in pairs, so the order of the frames decides), shards it and trains
with this config in a few minutes on two CPU cores. The recipe is the paper's (AdamW, parameter
groups, warmup + cosine, stochastic depth, head dropout, label smoothing) scaled down; the
backbone learning rate is not reduced (x1) since the model starts from random weights.
"""

CONFIG = {
    "name": "demo",
    "output_dir": "demo_output/run",
    "model": {
        "variant": None,
        "embed_dim": 32,
        "depths": [2, 2],
        "num_heads": [2, 4],
        "patch_size": [2, 4, 4],
        "window_size": [2, 4, 4],
        "drop_path_rate": 0.05,
        "head_dropout_rate": 0.1,
        "num_classes": 8,
    },
    "data": {
        "source": "tfrecord",
        "train": "demo_output/data/shards/train-*.tfrecord",
        "eval": "demo_output/data/shards/eval-*.tfrecord",
        "clip_len": 8,
        "frame_interval": 2,
        "crop_size": 64,
        "eval_views": {"num_clips": 1, "num_crops": 1, "short_side": 64},
        "test_views": {"num_clips": 2, "num_crops": 1, "short_side": 64},
        "area_range": [0.8, 1.0],
        "flip": False,  # left/right is a class
        "label_smoothing": 0.1,
        "synthetic": {"train_per_class": 32, "eval_per_class": 12, "num_frames": 20, "size": 64},
    },
    "optimizer": {
        "lr": 1e-3,
        "scale_lr": False,
        "weight_decay": 0.05,
        "backbone_lr_mult": 1.0,
    },
    "schedule": {"warmup_epochs": 1, "by_epoch": False},
    "train": {
        "epochs": 24,
        "batch_size": 4,
        "eval_every": 2,
        "backup_every": 0,
        "keep_checkpoints": 1,
    },
    "evaluate": {"batch_size": 16},
}
