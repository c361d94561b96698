#!/usr/bin/env bash
# Virtual environments for the official contenders, under .bench/ (git-ignored; BENCH_DIR
# moves them):
#   venv-stock:      the stock pattern AWS documents for custom containers,
#                    sagemaker-inference + Multi Model Server;
#   venv-torchserve: the official PyTorch toolkit, sagemaker-pytorch-inference on TorchServe
#                    (its latest release, with the TorchServe it was released with).
# Idempotent: an environment that imports is kept; one that does not is made anew.
# Each gets the torch (and torchvision) that ours runs, from requirements.lock, so that the
# comparison measures the servers, not two torch releases.
# Both servers' frontends are Java: a JDK 11+ (17 here) must be on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
bench=${BENCH_DIR:-$root/.bench}
pip_install=(pip install --quiet --disable-pip-version-check --no-input)
torch=(
  "$(grep '^torch==' "$root/requirements.lock")"
  "$(grep '^torchvision==' "$root/requirements.lock")"
)
# An environment with another torch is made anew.
same_torch="import torch, torchvision; assert torch.__version__.split('+')[0] == '${torch[0]#torch==}'"

command -v java >/dev/null || echo "warning: no java on PATH (apt-get install openjdk-17-jdk-headless)" >&2

make_venv() {  # make_venv NAME IMPORT-CHECK PACKAGE...
  local venv="$bench/$1" imports=$2
  shift 2
  if "$venv/bin/python" -W ignore -c "$imports" 2>/dev/null; then
    echo "kept: $venv"
    return
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m "${pip_install[@]}" "$@"
  "$venv/bin/python" -W ignore -c "$imports"
  echo "made: $venv"
}

# setuptools<81: sagemaker-inference imports pkg_resources, which setuptools 81 removed.
make_venv venv-stock \
  "import sagemaker_inference.model_server, mms, psutil, numpy, PIL; $same_torch" \
  sagemaker-inference==1.10.1 multi-model-server==1.1.11 "setuptools<81" \
  "${torch[@]}" numpy pillow

# 2.0.25 is sagemaker-pytorch-inference's latest release and carries its own copy of
# sagemaker_inference; TorchServe 0.12.0 is the latest (Java 11+). TorchServe's workers import
# yaml, which it does not declare. The toolkit serves the model folder as is (no .mar), so
# torch-model-archiver is installed but unused.
make_venv venv-torchserve \
  "import sagemaker_pytorch_serving_container.serving, ts, model_archiver, yaml, numpy, PIL; $same_torch" \
  sagemaker-pytorch-inference==2.0.25 torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml \
  "setuptools<81" "${torch[@]}" numpy pillow
