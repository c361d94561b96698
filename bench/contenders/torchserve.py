"""Serve a model with the official PyTorch toolkit: sagemaker-pytorch-inference on TorchServe.

    .bench/venv-torchserve/bin/python bench/contenders/torchserve.py --model-root DIR --port PORT

DIR is what /opt/ml is to SageMaker: DIR/model holds model.pt and code/inference.py. As for the
stock contender, the only change is the bind address the toolkit writes into TorchServe's
config (0.0.0.0 -> 127.0.0.1); the rest is its default, including its batching variables
SAGEMAKER_TS_BATCH_SIZE and SAGEMAKER_TS_MAX_BATCH_DELAY (setting any SAGEMAKER_TS_* also
sets the model's workers to SAGEMAKER_TS_MIN/MAX_WORKERS, default 1). TorchServe's own
defaults also listen on 127.0.0.1:8082 (metrics) and 127.0.0.1:7070-7071 (gRPC). It writes
/etc/sagemaker-ts.properties (the toolkit), /tmp/.model_server.pid, worker sockets
/tmp/.ts.sock.9000... and links to the model under /tmp/models/ (removed when it stops), and
its logs under DIR/run-torchserve/logs. Stop it with SIGTERM or Ctrl-C (launch.py).
"""

import sys
from pathlib import Path

from launch import run

HERE = Path(__file__).resolve().parent
# This script's folder would otherwise shadow anything named torchserve.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
TS_NAMESPACE = "org.pytorch.serve.ModelServer"


def serve() -> None:
    # Imported here: the toolkit sets its model store from the working directory on import.
    from sagemaker_pytorch_serving_container import serving, torchserve

    generate = torchserve._generate_ts_config_properties

    def loopback(handler_service):
        properties = generate(handler_service).replace("0.0.0.0", "127.0.0.1")
        print(f"{torchserve.TS_CONFIG_FILE}:\n{properties}", flush=True)
        return properties

    torchserve._generate_ts_config_properties = loopback
    serving.main()


if __name__ == "__main__":
    run(__doc__.splitlines()[0], "torchserve", TS_NAMESPACE, serve)
