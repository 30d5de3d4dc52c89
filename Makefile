# The two set-up commands of the README: `make train` (the main job) and `make test`.
# Both create .venv on first use. torch/torchvision are pinned to the builds on these
# machines' local disk so that no unpinned install pulls a different (multi-GB) build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: train test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,onnx,tensorboard]' $(TORCH_PINS)
	touch $@

train: $(VENV)/.installed
	$(PY) -m cnnkit.data.fetch fashion-mnist
	$(VENV)/bin/cnnkit train

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -n 2

test-fast: lint
	$(PY) -m pytest -q -m "not slow and not distributed"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
