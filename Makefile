# The two commands of the README contract:
#   make serve  - set up (.venv, torch first, the project) and start AEVis on the demo
#   make test   - set up test dependencies (incl. chromium) and run the whole suite
.PHONY: serve test setup setup-test bench lint

serve: setup
	.venv/bin/aevis serve

test: setup-test
	.venv/bin/python -m pytest

setup:
	scripts/setup.sh app

setup-test:
	scripts/setup.sh test

bench: setup
	.venv/bin/python bench/scores.py

lint: setup-test
	.venv/bin/ruff check aevis_core app tests bench
	.venv/bin/mypy
