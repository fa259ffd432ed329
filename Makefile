# The README's commands: `make quickstart`, `make quickstart-long` and `make test`. Each installs
# what it needs.
.PHONY: quickstart quickstart-long test test-fast install

# Extra `binprune train` options for the quickstarts, e.g. `make quickstart-long ARGS="--amp bf16"`
# (pass the same ones when re-running an interrupted quickstart).
ARGS ?=

install:
	@./scripts/bootstrap.sh

# Re-running continues an interrupted quickstart (or re-reports a finished one) instead of failing.
quickstart: install
	.venv/bin/binprune train --preset quickstart --out runs/quickstart $(ARGS) $$([ -f runs/quickstart/last.pt ] && echo --resume)

# Twice the epochs on a 97%-sparse network: PGD-20 >= 0.75 (README: Results).
quickstart-long: install
	.venv/bin/binprune train --preset quickstart-long --out runs/quickstart-long $(ARGS) $$([ -f runs/quickstart-long/last.pt ] && echo --resume)

test: install
	.venv/bin/python -m pytest -q tests

# The tests not marked slow (a quick check while editing; `make test` runs everything).
test-fast: install
	.venv/bin/python -m pytest -q -m "not slow" tests
