#!/usr/bin/env bash
# Create .venv (if needed) and install every package editable, pinned by constraints.txt.
# Re-runs pip only when constraints.txt or a package's pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP=$VENV/.bootstrap-stamp

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

want=$(cat constraints.txt packages/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

echo "[bootstrap] installing packages (editable) with constraints.txt"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
args=()
for p in packages/*/pyproject.toml; do
    d=$(dirname "$p")
    extras=""
    [ "$d" = "packages/core" ] && extras="[minilm,test,vision]"
    args+=(-e "$d$extras")
done
# One pip command for all packages: the PEP 420 namespace `plmkit` is shared by every editable install.
"$VENV/bin/python" -m pip install --quiet -c constraints.txt "${args[@]}"
# plmkit-veco[fairseq]: fairseq-fixed ships only an sdist whose C++/Cython extensions compile against the installed
# torch and numpy, so it builds without isolation, with Cython installed first (about 3 minutes on 2 cores).
echo "[bootstrap] building plmkit-veco[fairseq] (fairseq-fixed from source)"
"$VENV/bin/python" -m pip install --quiet -c constraints.txt Cython
"$VENV/bin/python" -m pip install --quiet --no-build-isolation -c constraints.txt -e "packages/veco[fairseq]"
echo "$want" > "$STAMP"
echo "[bootstrap] done"
