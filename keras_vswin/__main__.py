"""`python -m keras_vswin <command>`: the same as the `keras-vswin` console script."""

import sys

from keras_vswin.cli import main

sys.exit(main())
