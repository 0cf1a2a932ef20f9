# Two commands set up and use a fresh machine: `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pin the CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make run`: PowerNet on microgrid-6, a local learner and 2 actors (sync), ~3-5 min on 2 cores; then a
# greedy evaluation on the 20 protocol seeds and the plots. RUN_STEPS=... RUN_DIR=... override.
RUN_STEPS ?= 120000
RUN_DIR   := runs/powernet-mg6-$(shell date +%Y%m%d-%H%M%S)

run: $(STAMP)
	$(VENV)/bin/powernet train -c configs/powernet.toml --mode sync --actors 2 --steps $(RUN_STEPS) --out $(RUN_DIR)
	$(VENV)/bin/powernet evaluate --run $(RUN_DIR)
	$(VENV)/bin/powernet plot --run $(RUN_DIR)
	@echo "run:   $(RUN_DIR)  (metrics.csv, config.toml, checkpoints/, tb/, eval/summary.json)"
	@echo "logs:  $(RUN_DIR)/logs/  (supervisor, learner, actor-0, actor-1)"
	@echo "plots: $(RUN_DIR)/plots/  (return, losses, violations, eval voltage traces)"

test: $(STAMP)
	$(PY) -m pytest -q --durations=20

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/powernet bench sim --out runs/bench-sim.json

clean:
	rm -rf $(VENV) runs build *.egg-info
