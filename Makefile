# Two commands on a fresh machine: `make test` and `make demo`.
# Both create or refresh the local virtual environment (.venv) from pyproject.toml, pinned by
# requirements/constraints.txt; when nothing changed the stamp file makes this a no-op.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: venv test lint test-fast demo bench clean
venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing percepta and its dependencies into $(VENV) (first time: a few minutes)"
	@$(PIP) -c requirements/constraints.txt -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	@$(BIN)/python -c "import percepta, torch, torchvision; torchvision.ops.nms" \
		|| { echo "[make] installation check failed"; exit 1; }
	@touch $(STAMP)

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/percepta demo

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "# $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info

# Issue #4 experiments (each run < 15 min on 2 CPU cores; finished runs are reused)
.PHONY: exp-multi-teacher exp-distill exp-balance exp-iqt exp-triq exp-sgg exp-ranking
exp-multi-teacher: $(STAMP)
	$(BIN)/python experiments/multi_teacher.py
exp-distill: $(STAMP)
	$(BIN)/python experiments/distill_r50_r18.py
exp-balance: $(STAMP)
	$(BIN)/python experiments/loss_balance.py
exp-iqt: $(STAMP)
	$(BIN)/python experiments/iqt_builtin.py
exp-triq: $(STAMP)
	$(BIN)/python experiments/triq_clive.py
exp-sgg: $(STAMP)
	$(BIN)/python experiments/sgg_builtin.py
exp-ranking: $(STAMP)
	$(BIN)/python experiments/ranking_detectors.py
