"""`python -m training.train` = `keras-vswin train` (keras_vswin.finetune.train)."""

import sys

from keras_vswin.finetune.train import main

if __name__ == "__main__":
    sys.exit(main())
