#!/usr/bin/env bash
# Run pytest over every package and the cross-package tests, in PLMKIT_TEST_WORKERS processes (pytest-xdist;
# default: one per core, at most 2; 0 runs in this process). Each worker uses one torch thread, so the workers do
# not oversubscribe the cores. Exit code 5 ("no tests collected") is a failure: a suite that silently collects
# nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc 2>/dev/null || echo 1)
workers=${PLMKIT_TEST_WORKERS:-$(( cores < 2 ? cores : 2 ))}
args=()
if [ "$workers" -gt 1 ]; then
    export OMP_NUM_THREADS=1 PLMKIT_NUM_THREADS=1
    args=(-n "$workers" --dist worksteal)
fi
.venv/bin/python -m pytest "${args[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run_tests: pytest collected no tests; treating as a failure" >&2
    exit 1
fi
exit "$rc"
