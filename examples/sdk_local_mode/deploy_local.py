"""The SageMaker Python SDK's local mode (``sagemaker<3``) with this image: deploy, predict with
the SDK's own serializers, delete. README, "Local inference with a local model", shows it.

    python examples/sdk_local_mode/deploy_local.py --image sagemaker-torch-serving:latest \
        --model build/model.tar.gz [--code code/] --input digit.png

Without --code the model is a plain ``Model``: the archive brings its own ``code/`` (or none,
for the default handlers). With --code it is a ``PyTorchModel`` whose ``entry_point`` and
``source_dir`` the SDK packs into the archive, as it does for SageMaker. Local mode runs the
image with docker compose on this machine; no AWS call is made: the role is never assumed,
``local_code`` keeps the code and the model on disk instead of S3, and the bucket named in
``code_location`` spares the SDK its look-up (or creation) of a default bucket.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sagemaker import Model
from sagemaker.deserializers import CSVDeserializer, JSONDeserializer, NumpyDeserializer
from sagemaker.local import LocalSession
from sagemaker.predictor import Predictor
from sagemaker.pytorch import PyTorchModel
from sagemaker.serializers import CSVSerializer, IdentitySerializer, JSONSerializer, NumpySerializer

ROLE = "arn:aws:iam::111111111111:role/SageMakerRole"  # local mode never assumes it


def deploy(image: str, model_tar: Path, code: Path | None, port: int) -> tuple[Predictor, float]:
    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": port}}
    arguments = {
        "image_uri": image,
        "model_data": model_tar.resolve().as_uri(),  # file://...: unpacked, mounted
        "role": ROLE,
        "sagemaker_session": session,
    }
    if code is None:
        model = Model(**arguments)
    else:
        model = PyTorchModel(
            entry_point="inference.py",
            source_dir=str(code),
            framework_version="2.5",  # the SDK wants one; our image decides what runs
            py_version="py311",
            code_location="s3://local-mode/code",  # a bucket named, so none is looked up on S3
            **arguments,
        )
    started = time.monotonic()
    model.deploy(initial_instance_count=1, instance_type="local")
    took = time.monotonic() - started
    return Predictor(model.endpoint_name, sagemaker_session=session), took


def predict(predictor: Predictor, path: Path) -> object:
    """One prediction with the SDK's own serializer and deserializer for the file's type."""
    if path.suffix == ".json":
        predictor.serializer, predictor.deserializer = JSONSerializer(), JSONDeserializer()
        return predictor.predict(json.loads(path.read_text()))
    if path.suffix == ".npy":
        predictor.serializer, predictor.deserializer = NumpySerializer(), NumpyDeserializer()
        return predictor.predict(np.load(path)).tolist()
    if path.suffix == ".csv":
        predictor.serializer, predictor.deserializer = CSVSerializer(), CSVDeserializer()
        return predictor.predict(np.loadtxt(path, delimiter=",", ndmin=2))
    content_type = {".png": "image/png", ".jpg": "image/jpeg"}[path.suffix]
    predictor.serializer = IdentitySerializer(content_type)
    predictor.deserializer = JSONDeserializer()
    return predictor.predict(path.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", type=Path, required=True, help="model.tar.gz")
    parser.add_argument("--code", type=Path, help="a source_dir holding inference.py")
    parser.add_argument("--port", type=int, default=8080, help="where local mode serves")
    parser.add_argument(
        "--input",
        type=Path,
        action="append",
        required=True,
        help=".json, .npy, .csv, .png or .jpg; repeatable",
    )
    args = parser.parse_args()
    predictor, took = deploy(args.image, args.model, args.code, args.port)
    print(f"deploy() returned after {took:.1f} s")
    try:
        for path in args.input:
            print(f"{path.name}: {json.dumps(predict(predictor, path))}")
    finally:
        predictor.delete_model()  # first: it finds the model through the endpoint's config
        predictor.delete_endpoint()  # stops the container


if __name__ == "__main__":
    main()
