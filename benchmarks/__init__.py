"""The benchmarks behind `make bench`."""


def write_results(path, results):
    """Writes `results` as JSON to `path` through a temporary file and a rename."""
    # Imported here: benchmarks.run must import torch before anything imports TensorFlow.
    from keras_vswin import atomic

    atomic.write_json(path, results)
