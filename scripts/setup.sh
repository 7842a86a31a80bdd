#!/usr/bin/env bash
# Set up a fresh machine: the Debian data packages (Fashion-MNIST images, fortunes English text), the CPU build of
# torch, then mhaprune.
#   bash scripts/setup.sh        -> runtime install
#   bash scripts/setup.sh dev    -> plus the test/lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ ! -d /usr/share/games/fortunes ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist fortunes
fi
# The CPU wheel first: plain resolution of "torch" would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
if [ "$extra" = dev ]; then
  python -m pip install -q -e ".[dev]"
else
  python -m pip install -q -e .
fi
