#!/usr/bin/env bash
# Virtual environments for the official contenders, under .bench/ (git-ignored):
#   .bench/venv-stock: the stock pattern AWS documents for custom containers,
#                      sagemaker-inference + Multi Model Server;
#   .bench/venv-torchserve: the official PyTorch toolkit, sagemaker-pytorch-inference on
#                      TorchServe.
# Idempotent: an environment that imports is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
venv="$root/.bench/venv-stock"
if ! "$venv/bin/python" -c "import sagemaker_inference, mms, torch" 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # setuptools<81: sagemaker-inference imports pkg_resources, which setuptools 81 removed.
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    sagemaker-inference==1.10.1 multi-model-server==1.1.11 "setuptools<81" \
    torch==2.13.0 numpy pillow
fi
echo "ready: $venv"

venv="$root/.bench/venv-torchserve"
if ! "$venv/bin/python" -c "import sagemaker_pytorch_serving_container, ts, torch" 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    sagemaker-pytorch-inference==2.0.25 torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml \
    "setuptools<81" torch==2.13.0 numpy pillow
fi
echo "ready: $venv"
