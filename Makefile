# The two commands a new user needs:
#   make serve   set up, materialize the base model, train if no model exists, serve
#   make test    set up and run the whole test suite
# Each one creates or updates the virtual environment itself.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# Tests and CI never touch the network or the user's stores.
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 BENTOML_DO_NOT_TRACK=True TOKENIZERS_PARALLELISM=false

.PHONY: install serve test lint format constraints clean

install: $(STAMP)

# torch first and exactly 2.13.0: it takes the CPU wheel on the machine; anything else pulls CUDA.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

MODEL ?= models/stance

# Train on the bundled corpus if no model exists (about 15 min on 2 cores), export the
# fast ONNX backends once, then serve on http://127.0.0.1:3000.
serve: install
	test -f $(MODEL)/stance.json || $(PY) train/train.py --output_dir $(MODEL)
	test -f $(MODEL)/onnx.json || $(VENV)/bin/stance export-onnx $(MODEL)
	$(VENV)/bin/stance serve --model $(MODEL)

test: install
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src train tests benchmarks bento_service.py
	$(VENV)/bin/ruff format --check src train tests benchmarks bento_service.py

format: install
	$(VENV)/bin/ruff check --fix src train tests benchmarks bento_service.py
	$(VENV)/bin/ruff format src train tests benchmarks bento_service.py

# Refresh the lock after changing dependencies (keeps torch at the CPU build).
constraints: install
	(echo "# A pip freeze of a known-good environment (Python 3.11, CPU torch). Used as -c constraints"; \
	 echo "# so that a fresh install resolves in one step. Regenerate with: make constraints"; \
	 $(PY) -m pip freeze --exclude-editable | grep -v '^-e' | sort -f) > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
