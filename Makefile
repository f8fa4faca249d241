# Every target creates .venv and installs the pinned dependencies into it when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMES ?=

.PHONY: serve demo test test-deep test-sqlite test-postgres bench lint airflow clean install train

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip uv
	@echo "Installing pinned dependencies into $(VENV) (first run only)..."
	@$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock
	@$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# Bytecode up front: each Airflow task is a new process, and importing uncompiled modules
	@# (where the environment sets PYTHONDONTWRITEBYTECODE) costs seconds per task.
	@$(BIN)/python -m compileall -q -j 0 connectors dags dossier evaluation expectations warehouse > /dev/null
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/dossier demo $(if $(SMES),--smes $(SMES))

test: $(STAMP)
	@$(BIN)/python -m pytest -n 2 --dist loadgroup

# The consent law's stateful property with many more examples and longer runs than CI's.
DEEP_EXAMPLES ?= 1500
DEEP_STEPS ?= 30
DEEP_HTTP_EXAMPLES ?= 300
test-deep: $(STAMP)
	@DOSSIER_CONSENT_LAW_EXAMPLES=$(DEEP_EXAMPLES) DOSSIER_CONSENT_LAW_STEPS=$(DEEP_STEPS) \
		DOSSIER_CONSENT_LAW_HTTP_EXAMPLES=$(DEEP_HTTP_EXAMPLES) \
		$(BIN)/python -m pytest -n 2 tests/warehouse/test_consent_law_stateful.py

TRAIN_DATA ?= ../shared/data/credit/polish_bankruptcy_1y_train.csv
# Lender outcomes (dossier outcomes export OUT.csv): make train OUTCOMES=OUT.csv refits the adjustments.
OUTCOMES ?=

train: $(STAMP)
	@$(BIN)/python -m evaluation.train --data $(TRAIN_DATA) $(if $(OUTCOMES),--outcomes $(OUTCOMES))

bench: $(STAMP)
	@$(BIN)/python -m bench

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

serve: $(STAMP)
	@$(BIN)/dossier db upgrade
	@$(BIN)/dossier sandbox seed > /dev/null
	@$(BIN)/dossier serve

airflow: $(STAMP)
	@$(BIN)/dossier db upgrade
	@$(BIN)/dossier sandbox seed > /dev/null
	@$(BIN)/dossier airflow standalone

clean:
	rm -rf var .pytest_cache
