# Two commands do all the set-up: `make study` runs the main job, `make test` the tests.
# Both create .venv from pyproject.toml and make sure the default dataset is on disk first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: venv data study test test-slow bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST: Debian's dataset-fashion-mnist when we may install it (root, apt present),
# otherwise torchvision downloads it into runs/data on first use (machines with internet).
data: venv
	@if [ -f $(FMNIST_DEB) ] || [ -n "$$BOOTSTUDY_DATA" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else \
		$(PY) -m trainers.datasets --fetch fashion_mnist; \
	fi

study: data
	$(PY) run_study.py --space data_fraction

test: data
	$(PY) -m pytest -m "not slow"

test-slow: data
	$(PY) -m pytest -m slow

bench: data
	$(PY) bench/trainer.py

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs
