"""`python -m conversion.verify`: the repo's way to run `keras-vswin verify` (keras_vswin.cli.verify)."""

import sys

from keras_vswin.cli.verify import main

if __name__ == "__main__":
    sys.exit(main())
