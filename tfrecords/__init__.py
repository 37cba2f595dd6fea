"""TFRecord workflows of the repo: `python -m tfrecords.write`, `python -m tfrecords.inspect`,
`python -m tfrecords.synthetic`. The code lives in `keras_vswin.data` (installed, also reachable
as `keras-vswin write-shards|inspect-shards|synthetic`)."""
