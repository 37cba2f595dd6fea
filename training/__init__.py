"""Fine-tuning workflows of the repo: `python -m training.train`, `python -m training.evaluate`
and `python -m training.demo` (`make demo`). The code and the configs live in
`keras_vswin.finetune` (installed, also reachable as `keras-vswin train|evaluate`)."""
