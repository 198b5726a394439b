# Every target bootstraps what it needs (.venv, editable installs, builtin data).
PY := .venv/bin/python
export PLMKIT_CACHE ?= $(HOME)/.cache/plmkit

.PHONY: bootstrap demo test test-fast bench lint clean

bootstrap:
	@bash tools/bootstrap.sh

## Fine-tune the real MiniLM on the builtin rt-polarity task and print the test metrics.
demo: bootstrap
	$(PY) -m plmkit.core.cli data prepare rt-polarity
	$(PY) -m plmkit.core.cli train packages/core/configs/demo_rt_polarity.yaml --overwrite_output_dir

## The whole test suite (unit, parity, end-to-end on real data, 2-process DDP).
test: bootstrap
	$(PY) -m plmkit.core.cli data prepare rt-polarity trec
	bash tools/run_tests.sh

## Unit tests only (no real-data end-to-end or DDP runs).
test-fast: bootstrap
	$(PY) -m plmkit.core.cli data prepare rt-polarity trec
	bash tools/run_tests.sh -m "not slow and not ddp"

## Every package's performance benchmarks (packages/*/benchmarks/perf*.py), results in packages/*/benchmarks/results/.
bench: bootstrap
	for script in packages/*/benchmarks/perf*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: bootstrap
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check packages tests tools

clean:
	rm -rf .venv outputs runs .pytest_cache
