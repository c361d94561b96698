"""Serve a model with the stock pattern: sagemaker-inference's start_model_server and MMS.

    .bench/venv-stock/bin/python bench/contenders/stock.py --model-root DIR --port PORT

DIR is what /opt/ml is to SageMaker: DIR/model holds model.pt and code/inference.py, which
must define model_fn and predict_fn (DefaultInferenceHandler has neither). One change to the
toolkit, for this machine's rule that servers bind 127.0.0.1 only: its generated MMS config
binds 0.0.0.0, and the launcher rewrites that address. Everything else is the toolkit's
default: it writes /etc/sagemaker-mms.properties, MMS writes /tmp/.model_server.pid, its worker
sockets /tmp/.mms.sock.9000... and its logs under DIR/run-stock/logs. Stop it with SIGTERM or
Ctrl-C: the toolkit forwards SIGTERM to MMS, and the launcher then stops MMS's Python workers,
which would otherwise stay (launch.py).
"""

import contextlib
import os
import tempfile
from pathlib import Path

from launch import run

HERE = Path(__file__).resolve().parent
MMS_NAMESPACE = "com.amazonaws.ml.mms.ModelServer"


def serve() -> None:
    # MMS's workers import the handler service module from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # `multi-model-server --start` refuses to start while the pid in this file is alive,
    # whatever that process now is (then the toolkit waits 10 minutes for an MMS that never
    # comes). No MMS runs now (launch.py checked), so the file is stale.
    with contextlib.suppress(OSError):
        (Path(tempfile.gettempdir()) / ".model_server.pid").unlink()

    from sagemaker_inference import model_server

    generate = model_server._generate_mms_config_properties

    def loopback(env, handler_service=None):
        properties = generate(env, handler_service).replace("0.0.0.0", "127.0.0.1")
        print(f"{model_server.MMS_CONFIG_FILE}:\n{properties}", flush=True)
        return properties

    model_server._generate_mms_config_properties = loopback
    model_server.start_model_server(handler_service="stock_handler_service")


if __name__ == "__main__":
    run(__doc__.splitlines()[0], "stock", MMS_NAMESPACE, serve)
