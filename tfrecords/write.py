"""`python -m tfrecords.write` = `keras-vswin write-shards` (keras_vswin.data.write_shards)."""

import sys

from keras_vswin.data.write_shards import main

if __name__ == "__main__":
    sys.exit(main())
