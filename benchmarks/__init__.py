"""The benchmarks behind `make bench`."""

import json
import os


def write_results(path, results):
    """Writes `results` as JSON to `path` through a temporary file and a rename."""
    # Imported here: benchmarks.run must import torch before anything imports TensorFlow.
    from keras_vswin.training import atomic_write_text

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2))
