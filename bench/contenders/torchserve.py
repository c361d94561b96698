"""Serve a model with the official PyTorch toolkit: sagemaker-pytorch-inference on TorchServe.

    .bench/venv-torchserve/bin/python bench/contenders/torchserve.py --model-root DIR --port PORT

DIR/model is laid out as /opt/ml/model. As for the stock contender, the only change is the
bind address the toolkit writes into TorchServe's config (0.0.0.0 -> 127.0.0.1); the rest is
its default, including its batching variables SAGEMAKER_TS_BATCH_SIZE and
SAGEMAKER_TS_MAX_BATCH_DELAY. It writes /etc/sagemaker-ts.properties and TorchServe's logs
under ./logs. Stop it by signalling its process group.
"""

from launch import prepare


def main() -> None:
    prepare(__doc__.splitlines()[0], "sagemaker-ts-")

    from sagemaker_pytorch_serving_container import serving, torchserve

    generate = torchserve._generate_ts_config_properties

    def loopback(handler_service):
        return generate(handler_service).replace("0.0.0.0", "127.0.0.1")

    torchserve._generate_ts_config_properties = loopback
    serving.main()


if __name__ == "__main__":
    main()
