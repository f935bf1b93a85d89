# `make demo` and `make test` work on a fresh machine: each creates .venv if missing and
# installs the package with the tested pins from constraints.txt.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo demo-vision test lint install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: GAIL vs L2L-GAIL on HalfCheetah, 3 seeds each, two runs at a time (under 10 minutes
# on 2 free cores after the install; see scripts/demo.py). Re-running resumes or reprints it.
demo: $(STAMP)
	$(PY) scripts/demo.py

# A few-minute vision comparison (standard, PGD-10, L2L-grad) on Fashion-MNIST.
demo-vision: $(STAMP)
	@test -d $(FMNIST) || { [ "$$(id -u)" = 0 ] && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	  || { echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; }
	$(PY) scripts/demo_vision.py

test: $(STAMP)
	$(PY) -m pytest -q

# ruff, and mypy on the package (its configuration is in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check l2l_gail scripts tests
	$(VENV)/bin/mypy l2l_gail

clean-venv:
	rm -rf $(VENV)
