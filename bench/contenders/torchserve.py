"""Serve a model with the official PyTorch toolkit: sagemaker-pytorch-inference on TorchServe.

    .bench/venv-torchserve/bin/python bench/contenders/torchserve.py --model-root DIR --port PORT

DIR/model is laid out as /opt/ml/model. As for the stock contender, the only change is the
bind address the toolkit writes into TorchServe's config (0.0.0.0 -> 127.0.0.1); the rest is
its default, including its batching variables SAGEMAKER_TS_BATCH_SIZE and
SAGEMAKER_TS_MAX_BATCH_DELAY. It writes /etc/sagemaker-ts.properties and TorchServe's logs
under ./logs. Stop it by signalling its process group.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ["SAGEMAKER_BASE_DIR"] = str(args.model_root.resolve())
    os.environ["SAGEMAKER_BIND_TO_PORT"] = str(args.port)
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    os.chdir(tempfile.mkdtemp(prefix="sagemaker-ts-"))

    from sagemaker_pytorch_serving_container import serving, torchserve

    generate = torchserve._generate_ts_config_properties

    def loopback(handler_service):
        return generate(handler_service).replace("0.0.0.0", "127.0.0.1")

    torchserve._generate_ts_config_properties = loopback
    serving.main()


if __name__ == "__main__":
    main()
