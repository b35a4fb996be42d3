#!/usr/bin/env bash
# Create .venv (if missing) and install what is missing: the runtime requirements, and with --dev the test tools.
# Idempotent and quick on a machine that already has everything. Override the interpreter with PYTHON=...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
requirements=requirements.txt
# The requirements (besides torch) that `rasterizer.numba_backend` imports: installed first, to compile its kernels.
KERNEL_PACKAGES="numba|pyyaml"
[[ "${1:-}" == "--dev" ]] && requirements=requirements-dev.txt

if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing $TORCH_SPEC and $requirements"
  if [[ $requirements == requirements.txt ]]; then
    # The runtime from nothing (README's first command), in the order that keeps both cores busy:
    # - pip's bytecode pass goes through every installed module on one core, most of torch's install time. Instead
    #   import the entry points once, which writes the bytecode of exactly the modules they use (also where
    #   PYTHONDONTWRITEBYTECODE is set, as pip's pass would); any other module compiles when first imported. --dev
    #   keeps pip's pass: the tests import far more.
    # - numba compiles the CPU rasterizer's kernels on first use (~10 s on one core; then cached on disk). torch and
    #   $KERNEL_PACKAGES go in first and the kernels compile in the background while the rest installs, so that the
    #   first upscale does not wait for them (should that compile fail, the first render compiles them).
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-compile "$TORCH_SPEC" \
      $(grep -iE "^($KERNEL_PACKAGES)\b" "$requirements")
    echo "bootstrap: compiling the CPU rasterizer's kernels (in the background)"
    .venv/bin/python -c "from rasterizer.numba_backend import compile_kernels; compile_kernels()" &
    kernels=$!
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -r "$requirements"
    echo "bootstrap: compiling the bytecode of what the entry points import"
    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -c "import demo, test, train, viewer"
    wait "$kernels" || echo "bootstrap: warning: the rasterizer's kernels did not compile now; the first render will"
  else
    .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC" -r "$requirements"
  fi
else
  echo "bootstrap: checking $requirements"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
fi

# --dev: the browser test of the viewer (tests/test_viewer_browser.py) drives Debian's chromium; install it when
# missing and we may (root, apt-get present). Non-fatal: without it that test skips.
if [[ "${1:-}" == "--dev" ]] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing chromium + chromium-driver (apt-get)"
    { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } ||
      echo "bootstrap: warning: could not install chromium; the browser test will skip"
  else
    echo "bootstrap: note: no chromium/chromedriver (apt-get install chromium chromium-driver, as root);" \
         "the browser test will skip"
  fi
fi
