#!/usr/bin/env bash
# Set up a fresh machine for faustgen: system toolchains (when root), then .venv/.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, every one named: apt-get runs with --no-install-recommends, so whatever a
# package only *recommends* must be listed here. The cross compilers only recommend their C
# libraries (libc6-dev-*-cross: <math.h>, crt1.o, libm), so those are named explicitly;
# tests/e2e/test_toolchains.py compiles a <math.h> file with each compiler to catch the next one.
#   gcc make                          host builds, bundle Makefiles
#   gcc-arm-linux-gnueabihf libc6-dev-armhf-cross linux-libc-dev-armhf-cross   rpi, rpi0
#   gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross     rpi64
#   binutils-arm-linux-gnueabihf binutils-aarch64-linux-gnu   as/ld/size for the cross builds
#   qemu-user                         runs the Raspberry Pi builds in the tests
#   clang valgrind                    generated-code hygiene tests (strict clang, memcheck)
#   dataset-fashion-mnist             the demo's data
want=(gcc make
      gcc-arm-linux-gnueabihf libc6-dev-armhf-cross linux-libc-dev-armhf-cross
      binutils-arm-linux-gnueabihf
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross
      binutils-aarch64-linux-gnu
      qemu-user clang valgrind time dataset-fashion-mnist)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null || { echo "setup: apt-get install ${missing[*]} failed" >&2; exit 1; }
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
# ray (the cluster extra) lets the tests run --ray against a real local Ray.
.venv/bin/python -m pip install -q -e '.[torch,dev,cluster]' 2>&1 | grep -v "^WARNING: Location" || true
# The model zoo used by the tests and benchmarks (torchvision, timm). torchvision 0.28.0 is the
# release for torch 2.13 but a CUDA build: --no-deps keeps it from pulling CUDA torch, and
# faustgen.zoo.torchvision_models() makes it import on the CPU torch. timm likewise, with the
# three packages it needs named explicitly.
.venv/bin/python -m pip install -q --no-deps torchvision==0.28.0 timm==1.0.31 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q huggingface_hub safetensors pyyaml 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import faustgen, numpy, scipy, onnx, onnxruntime, jinja2, cffi, torch; from faustgen import zoo; zoo.timm()" \
    || { echo "setup: Python dependencies failed to install" >&2; exit 1; }
echo "setup: ready (.venv)"
