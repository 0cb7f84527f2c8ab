#!/usr/bin/env bash
# Set up a fresh machine for faustgen: system toolchains (when root), then .venv/.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: cross compilers and qemu-user for the Raspberry Pi targets, clang and
# valgrind for the generated-code hygiene tests, Fashion-MNIST for the demo.
want=(gcc make gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu qemu-user clang valgrind
      dataset-fashion-mnist)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null || echo "setup: warning: some Debian packages failed to install"
    fi
else
    echo "setup: not root; skipping Debian packages (${want[*]}); tests that need them will skip"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch is pinned to the CPU build (an unpinned torch pulls several GB of CUDA wheels).
.venv/bin/python -m pip install -q -e '.[torch,dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import faustgen, numpy, scipy, onnx, onnxruntime, jinja2, cffi, torch" \
    || { echo "setup: Python dependencies failed to install" >&2; exit 1; }
echo "setup: ready (.venv)"
