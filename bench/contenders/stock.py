"""Serve a model with the stock pattern: sagemaker-inference's start_model_server and MMS.

    .bench/venv-stock/bin/python bench/contenders/stock.py --model-root DIR --port PORT

DIR/model is laid out as /opt/ml/model (model.pt, code/inference.py). One change to the
toolkit, for this machine's rule that servers bind 127.0.0.1 only: its generated MMS config
binds 0.0.0.0, and the launcher rewrites that address. Everything else is the toolkit's
default (it writes /etc/sagemaker-mms.properties and MMS logs under ./logs). Start it with
start_new_session=True and stop it by signalling its process group: the toolkit forwards
SIGTERM to MMS, whose Python workers would otherwise be left behind.
"""

import os
from pathlib import Path

from launch import prepare

HERE = Path(__file__).resolve().parent


def main() -> None:
    prepare(__doc__.splitlines()[0], "stock-mms-")
    # MMS's workers import the handler service module from here.
    os.environ["PYTHONPATH"] = f"{HERE}:{os.environ.get('PYTHONPATH', '')}"

    from sagemaker_inference import model_server

    generate = model_server._generate_mms_config_properties

    def loopback(env, handler_service=None):
        return generate(env, handler_service).replace("0.0.0.0", "127.0.0.1")

    model_server._generate_mms_config_properties = loopback
    model_server.start_model_server(handler_service="stock_handler_service")


if __name__ == "__main__":
    main()
