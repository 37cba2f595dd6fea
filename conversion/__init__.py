"""Runnable conversion workflows: `python -m conversion.convert`, `python -m conversion.verify`
(and `python -m conversion.export`). Each has `--help`."""
