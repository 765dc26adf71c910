# The two commands README.md promises: `make run` (the whole system locally, on embedded
# defaults; `make run ARGS="--port-base 100"` passes options) and `make test` (what .ci/run
# calls); each installs what it needs first.
.PHONY: run test lint bench-retrieve bench-e2e

run:
	bash scripts/setup
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen dicom-iso dev $(ARGS)

test:
	bash scripts/setup
	$(MAKE) lint
	bash scripts/test-services
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen pytest

# ruff and mypy --strict over everything (what to check is in pyproject.toml); `make test`
# runs this first, so a lint failure fails CI in seconds instead of after the suite.
lint:
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen ruff check
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen ruff format --check
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen mypy

bench-retrieve:
	uv run --frozen python bench/retrieve.py

bench-e2e:
	uv run --frozen python bench/e2e.py --keep-dir /tmp/e2e-keep --probe
