"""`python -m training.evaluate` = `keras-vswin evaluate` (keras_vswin.finetune.evaluate)."""

import sys

from keras_vswin.finetune.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
