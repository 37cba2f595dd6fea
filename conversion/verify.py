"""`python -m conversion.verify` = `keras-vswin verify` (keras_vswin.cli.verify)."""

import sys

from keras_vswin.cli.verify import main

if __name__ == "__main__":
    sys.exit(main())
