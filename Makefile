# The two commands README.md promises: `make run` (the whole system locally, on embedded
# defaults) and `make test` (what .ci/run calls); each installs what it needs first.
.PHONY: run test lint bench-retrieve

run:
	bash scripts/setup
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen dicom-iso dev

test:
	bash scripts/setup
	bash scripts/test-services
	PATH="$$PATH:$$HOME/.local/bin" uv run --frozen pytest

lint:
	uv run --frozen ruff check libs services tests bench
	uv run --frozen mypy libs/common/src libs/client/src libs/tools/src services/retriever/src services/lookup/src \
	  services/forwarder/src services/packager/src

bench-retrieve:
	uv run --frozen python bench/retrieve.py
