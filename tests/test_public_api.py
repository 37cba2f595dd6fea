"""The library uses public Keras and TensorFlow APIs only.

Private modules (`keras.src`, `tf.__internal__`, `tensorflow.python`) and private trainer hooks
(`_symbolic_build`) change without notice between releases; code that uses them pins the
library to one Keras/TensorFlow version. This scans the source text, so imports, attribute
access and strings alike are caught.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("keras_vswin", "training", "conversion", "tfrecords")
FORBIDDEN = re.compile(r"keras\.src|tf\.__internal__|tensorflow\.python|_symbolic_build")


def _python_files():
    for folder in FOLDERS:
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.join(directory, name)


def test_the_scan_sees_the_package():
    files = [os.path.relpath(p, ROOT) for p in _python_files()]
    assert os.path.join("keras_vswin", "model.py") in files
    assert os.path.join("keras_vswin", "finetune", "optimizer.py") in files


def test_no_private_keras_or_tensorflow_api():
    hits = []
    for path in _python_files():
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                match = FORBIDDEN.search(line)
                if match:
                    hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {match.group(0)}")
    assert not hits, "private Keras/TensorFlow APIs in use:\n" + "\n".join(hits)


def test_the_pattern_catches_each_private_api():
    for text in (
        "from keras.src.backend.tensorflow import trainer",
        "tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy)",
        "from tensorflow.python.framework import op_def_registry",
        "model._symbolic_build(data_batch=batch)",
        "model._maybe_symbolic_build = lambda *a: None",
    ):
        assert FORBIDDEN.search(text), text
    assert not FORBIDDEN.search("import tensorflow as tf; keras.optimizers.AdamW")
