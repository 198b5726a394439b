#!/usr/bin/env bash
# Run pytest over every package and the cross-package tests. Exit code 5 ("no tests collected") is a failure:
# a suite that silently collects nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run_tests: pytest collected no tests; treating as a failure" >&2
    exit 1
fi
exit "$rc"
