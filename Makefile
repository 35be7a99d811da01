# TinyLM course. Main job: `make lab` (set up, prepare the data, open JupyterLab).
# Tests: `make test` (same set-up, then lint and pytest with every notebook in the `ci` profile).
# Versions: `make setup` installs every package at the version pinned in requirements.lock (the
# versions CI tests); `make lock` refreshes that file with uv after pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch is installed first and on its own so you can choose the build, e.g. a CUDA build:
#   make setup TORCH_PIP_ARGS="--extra-index-url <your CUDA wheel index>"
# The lock pins torch to $(TORCH), which a local build such as 2.13.0+cu128 satisfies (another
# release needs `make lock TORCH=torch==X.Y.Z` first). Keep PyPI reachable (--extra-index-url, not
# --index-url): torch's own dependencies come from PyPI at their locked versions, which a CUDA
# wheel index may not carry.
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# Every dependency, for Linux, macOS and Windows and each Python >= 3.10, used as pip constraints:
# a package is installed at its pinned version, and only if something requires it (so the nvidia-*
# and triton pins that PyPI's Linux torch needs cost nothing to a CPU or CUDA build without them).
LOCK := requirements.lock
# uv resolves the lock; a maintainer's tool installed into $(VENV) by `make lock` only, not a
# dependency of the course.
UV ?= uv==0.13.9
# Extra JupyterLab options, e.g. LAB_ARGS="--no-browser --port 8899"; root (a container or a
# cloud VM) needs --allow-root, which is added for you.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup lock data lab demo warm test test-fast browser-test exercises exercises-train bench \
	notebooks lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $@

# Re-resolve requirements.lock from pyproject.toml (with the dev extra) against PyPI, for every
# platform (--universal) and Python from 3.10, torch pinned to $(TORCH). uv keeps each version the
# old lock pinned unless pyproject.toml rules it out, so only what changed moves; to move
# everything to the newest releases: `make lock LOCK_ARGS=--upgrade` (one package:
# LOCK_ARGS="--upgrade-package NAME"). Commit the result; then raise pyproject.toml's lower bounds
# to the new versions. Needs network access to PyPI.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(UV)"
	echo "$(TORCH)" | $(BIN)/uv pip compile --quiet pyproject.toml --extra dev --universal \
		--python-version 3.10 --no-python-downloads --constraints - \
		--custom-compile-command "make lock" $(LOCK_ARGS) --output-file $(LOCK)

data: setup
	$(BIN)/python -m tinylm data

# JupyterLab's settings come from .jupyter/lab/user-settings, not ~/.jupyter: no news pop-up and
# no update check. What you change in its Settings is kept there (and ignored by git).
lab: data
	JUPYTERLAB_SETTINGS_DIR="$(CURDIR)/.jupyter/lab/user-settings" \
		$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

demo: data
	$(BIN)/python -m tinylm demo

# Before a workshop: prepare the data and train every run the profile's notebooks use, so no
# notebook trains for minutes in class (TINYLM_PROFILE=cpu by default on a machine without CUDA).
warm: data
	$(BIN)/python -m tinylm warm

# One linter and one formatter: `ruff format .` rewrites what the check below refuses.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: data lint
	$(BIN)/python -m pytest

# The edit-test loop: the unit tests on synthetic data, without the slow ones (child processes,
# DDP/FSDP, torch.compile, bench scripts, exercises) and without the notebooks; no corpus
# download. `make test` still runs everything.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow and not browser" -q

# Notebooks 03 and 07 in JupyterLab under headless Chromium (needs chromium and chromedriver;
# about 3 minutes). `make test` runs it too where CI or TINYLM_BROWSER_TEST=1 is set.
browser-test: data
	TINYLM_BROWSER_TEST=1 $(BIN)/python -m pytest -m browser tests/test_browser.py

# Check your own versions of the exercises in exercises/ (each fails until you write it);
# `pytest exercises --solutions` checks the worked solutions in exercises/solutions/ instead.
exercises: setup
	$(BIN)/python -m pytest exercises

# Train a small character GPT built only from your pieces (batches, attention, gpt, cross_entropy,
# adamw, training, sampling) beside tinylm's, compare their losses and print your model's poems;
# until every piece is written it lists the missing ones. `python -m exercises.train --solutions`
# runs the worked solutions. 300 steps per model in the cpu profile, on the CPU in every profile:
# 138 s for both on a 2-core CPU in fp32 (data/reference/exercises_train_cpu-fp32.json).
exercises-train: data
	$(BIN)/python -m exercises.train

bench: data
	$(BIN)/python bench/data_prep.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/generate.py --model char-cpu --new-tokens 127,255 --plain-batch-sizes 1,16 \
		--variants threads1,bf16
	$(BIN)/python bench/cpu_speed.py
	$(BIN)/python bench/report.py

# Re-execute every notebook in place (default profile cpu) so the committed outputs are current.
notebooks: data
	TINYLM_PROFILE=$${TINYLM_PROFILE:-cpu} $(BIN)/jupyter nbconvert --to notebook --execute \
		--inplace --ExecutePreprocessor.timeout=1800 notebooks/*.ipynb

clean:
	rm -rf data/processed data/bench
