# The two commands of the README: `make quickstart` and `make test`. Each installs what it needs.
.PHONY: quickstart test install

install:
	@./scripts/bootstrap.sh

quickstart: install
	.venv/bin/binprune train --preset quickstart --out runs/quickstart

test: install
	.venv/bin/python -m pytest -q tests
