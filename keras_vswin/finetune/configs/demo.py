"""The demo: a small Video Swin trained from scratch on the synthetic moving-shapes dataset.

`python -m training.demo` generates the dataset (`keras_vswin.data.synthetic`, 8 classes that are
time reversals of each other in pairs, so the order of the frames decides; its size is
`data.synthetic`), shards it and trains with this config: 98-99% held-out top-1 (2 clips) for
seeds 0-2, the whole demo in about 95 CPU-seconds. The recipe is the paper's (AdamW, parameter
groups, warmup + cosine, stochastic depth, head dropout, label smoothing) scaled down: 32x32
frames, clips of 8 frames, two stages, a batch of 16 (smaller ones leave the CPU waiting on
per-step overhead) with a higher learning rate; the backbone learning rate is not reduced (x1)
since the model starts from random weights. Validation every 5 epochs: each costs about as much
as a training epoch.
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
        "crop_size": 32,
        "eval_views": {"num_clips": 1, "num_crops": 1, "short_side": 32},
        "test_views": {"num_clips": 2, "num_crops": 1, "short_side": 32},
        "area_range": [0.8, 1.0],
        "flip": False,  # left/right is a class
        "label_smoothing": 0.1,
        "synthetic": {"train_per_class": 64, "eval_per_class": 25, "num_frames": 20, "size": 32},
    },
    "optimizer": {
        "lr": 2e-3,
        "scale_lr": False,
        "weight_decay": 0.05,
        "backbone_lr_mult": 1.0,
    },
    "schedule": {"warmup_epochs": 1, "by_epoch": False},
    "train": {
        "epochs": 15,
        "batch_size": 16,
        "eval_every": 5,
        "backup_every": 0,
        "keep_checkpoints": 1,
    },
    "evaluate": {"batch_size": 16},
}
