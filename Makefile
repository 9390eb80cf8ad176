# medvl: `make demo` trains the quick-start model on the synthetic dataset, `make test` runs the suite.
# Both set themselves up: a .venv is created with pip when absent.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.medvl-installed
# The torch/torchvision pair that installs from this machine's local wheels; override elsewhere.
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet $(TORCH_PAIR)
	$(BIN)/pip install --quiet -e '.[dev]' $(TORCH_PAIR)
	$(BIN)/pip install --quiet --no-deps radlabels==0.2.0  # labeler dev set: data files only (its pins would downgrade torch)
	$(BIN)/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medvl demo --config experiments/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs exports lightning_logs .pytest_cache
