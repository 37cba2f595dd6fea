"""Fine-tuning and evaluation workflows (`python -m training.train`, `python -m training.evaluate`,
`python -m training.demo`); configs in `training/configs/`."""
