"""`python -m tfrecords.synthetic` = `keras-vswin synthetic` (keras_vswin.data.synthetic)."""

import sys

from keras_vswin.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
