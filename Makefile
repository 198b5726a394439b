# Every target bootstraps what it needs (.venv, editable installs, builtin data).
PY := .venv/bin/python
export PLMKIT_CACHE ?= $(HOME)/.cache/plmkit

.PHONY: bootstrap demo test test-defaults test-fast bench lint clean

bootstrap:
	@bash tools/bootstrap.sh

## Fine-tune the real MiniLM on the builtin rt-polarity task and print the test metrics.
demo: bootstrap
	$(PY) -m plmkit.core.cli data prepare rt-polarity
	$(PY) -m plmkit.core.cli train packages/core/configs/demo_rt_polarity.yaml --overwrite_output_dir \
		$$($(PY) -c "from plmkit.core.testing import bf16_flags; print(' '.join(bf16_flags()))")

## The test suite (unit, parity, the contract kit, end-to-end on real data, 2-process DDP), less the ten real-data
## runs of test-defaults.
test: bootstrap
	$(PY) -m plmkit.core.cli data prepare rt-polarity trec
	bash tools/run_tests.sh -m "not defaults"

## Every classification method trained with its default options on real TREC data (MiniLM, 128 steps each; 9-12
## min on 2 CPUs). CI runs it after `make test`.
test-defaults: bootstrap
	$(PY) -m plmkit.core.cli data prepare trec
	bash tools/run_tests.sh -m defaults

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
