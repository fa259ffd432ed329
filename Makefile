# The two commands of the README: `make quickstart` and `make test`. Each installs what it needs.
.PHONY: quickstart test test-fast install

install:
	@./scripts/bootstrap.sh

# Re-running continues an interrupted quickstart (or re-reports a finished one) instead of failing.
quickstart: install
	.venv/bin/binprune train --preset quickstart --out runs/quickstart $$([ -f runs/quickstart/last.pt ] && echo --resume)

test: install
	.venv/bin/python -m pytest -q tests

# The tests not marked slow (a quick check while editing; `make test` runs everything).
test-fast: install
	.venv/bin/python -m pytest -q -m "not slow" tests
