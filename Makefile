# Two commands do all the set-up: `make study` runs the main job, `make test` the tests.
# Both create .venv from pyproject.toml and make sure the default dataset is on disk first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium
# Debian packages are installed only when we may (root, apt-get present); apt's lists are
# refreshed only when the package is not found without it.
MAY_APT := [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null
apt_get = echo "installing Debian's $(1)"; apt-get install -y -q $(1) >/dev/null 2>&1 || \
	{ apt-get update -q >/dev/null && apt-get install -y -q $(1) >/dev/null; }

.PHONY: venv data browser study test test-slow test-reliability bench lint clean

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
	elif $(MAY_APT); then \
		$(call apt_get,dataset-fashion-mnist); \
	else \
		$(PY) -m trainers.datasets --fetch fashion_mnist; \
	fi

# Chromium for the report tests (Playwright drives Debian's; it never downloads browsers): installed
# like the dataset when we may (root, apt present); elsewhere those tests say why they skip.
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif $(MAY_APT); then \
		$(call apt_get,chromium); \
	else \
		echo "note: $(CHROMIUM) is missing and cannot be installed here; the browser tests skip"; \
	fi

study: data
	$(PY) run_study.py --space data_fraction

test: data browser
	$(PY) -m pytest -m "not slow and not reliability"

test-slow: data browser
	$(PY) -m pytest -m slow

# Kills, interrupts and faults on SQLite and PostgreSQL (tests/reliability).
test-reliability: data
	$(PY) -m pytest -m reliability tests/reliability

bench: data
	$(PY) bench/trainer.py

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs
