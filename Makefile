# Two commands on a fresh machine (see README): `make demo` and `make test`.
# scripts/bootstrap.sh builds the virtualenv once (outside the clone, keyed by requirements.txt) and prints it.
SHELL := /bin/bash
JOB ?= jobs/demo.toml
PYTEST_ARGS ?=

.PHONY: demo test venv ui

venv:
	@scripts/bootstrap.sh

demo:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/radscale" sweep $(JOB)

test:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" -m pytest tests $(PYTEST_ARGS)

ui:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/radscale" ui
