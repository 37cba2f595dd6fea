"""Command-line tools for TFRecord video shards.

- `python -m tfrecords.write`: video files -> sharded `tf.train.SequenceExample` TFRecords.
- `python -m tfrecords.inspect`: counts, label histogram, frame statistics, contact sheet.
"""
