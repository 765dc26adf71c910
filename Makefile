# The two commands README.md promises. `make test` is what .ci/run calls.
.PHONY: test lint bench-retrieve

test:
	uv run --frozen pytest

lint:
	uv run --frozen ruff check libs services tests bench
	uv run --frozen mypy libs/common/src libs/client/src services/retriever/src services/lookup/src \
	  services/forwarder/src services/packager/src

bench-retrieve:
	uv run --frozen python bench/retrieve.py
