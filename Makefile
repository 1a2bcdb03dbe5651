# clipsearch: `make demo` sets up and runs the offline demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pinned to the wheels this project is built and tested with (see README).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test demo bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[cpu,dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/clipsearch demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
