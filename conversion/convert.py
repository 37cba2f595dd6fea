"""`python -m conversion.convert` = `keras-vswin convert` (keras_vswin.cli.convert)."""

import sys

from keras_vswin.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
