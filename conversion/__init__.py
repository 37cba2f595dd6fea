"""Conversion workflows of the repo: `python -m conversion.convert`, `python -m conversion.export`,
`python -m conversion.verify`. The code lives in `keras_vswin.cli` (installed, also reachable as
`keras-vswin convert|export|verify`)."""
