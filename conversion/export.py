"""`python -m conversion.export` = `keras-vswin export` (keras_vswin.cli.export)."""

import sys

from keras_vswin.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
