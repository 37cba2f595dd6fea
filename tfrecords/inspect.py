"""`python -m tfrecords.inspect` = `keras-vswin inspect-shards` (keras_vswin.data.inspect_shards)"""

import sys

from keras_vswin.data.inspect_shards import main

if __name__ == "__main__":
    sys.exit(main())
