# keras-vswin developer commands. Each target creates its virtual environment on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The lowest supported versions (tests/constraints-lowest.txt) live in a second environment.
LOWEST := .venv-lowest
LOWEST_BIN := $(LOWEST)/bin
# There: the model, conversion and export tests, less what costs minutes and depends on no
# version (Swin-S/B/L, the large clip shapes, the bfloat16/XLA export, CLI subprocesses).
LOWEST_TESTS := tests/test_model.py tests/test_windows.py tests/test_convert.py \
	tests/test_weights.py tests/test_parity.py tests/test_export.py
LOWEST_DESELECT := VideoSwinS or VideoSwinB or VideoSwinL or swin3d_s or swin3d_b \
	or 1x10x100x130 or 1x8x112x112 or 2x16x64x64 or bfloat16_xla or saved_model_cli \
	or cli_help or convert_cli_outputs
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test test-lowest bench lint format clean

$(BIN)/python $(LOWEST_BIN)/python:
	$(PYTHON) -m venv $(dir $(@D))
	$@ -m pip install --quiet --upgrade pip setuptools wheel

# Stamps re-run the install whenever the package metadata changes.
$(VENV)/.installed-demo: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[tensorboard]'
	touch $@

# The test extra includes tensorboard: it also satisfies the demo.
$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,torch,hub]'
	touch $@ $(VENV)/.installed-demo

$(LOWEST)/.installed-test: $(LOWEST_BIN)/python setup.cfg pyproject.toml tests/constraints-lowest.txt
	$(LOWEST_BIN)/python -m pip install --quiet -c tests/constraints-lowest.txt -e '.[torch]' 'pytest>=7' 'pytest-xdist>=3'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m training.demo

# One pytest worker per core: much of the suite is single-threaded tracing and process
# start-up (at most 4: each holds TensorFlow and a model). Whole files go to one worker, so
# that a module's fixtures are built once.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -ra --durations=15 -n auto --maxprocesses 4 --dist loadfile tests
	$(MAKE) --no-print-directory test-lowest

test-lowest: $(LOWEST)/.installed-test
	$(LOWEST_BIN)/python -m pytest -q -ra --durations=5 -n auto --maxprocesses 4 --dist loadfile -k 'not ($(LOWEST_DESELECT))' $(LOWEST_TESTS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[bench]' || echo "keras-cv could not be installed; its column will be empty"
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.bench_training --demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(LOWEST) build dist *.egg-info .pytest_cache .ruff_cache
