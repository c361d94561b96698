"""A batch transform with the SageMaker Python SDK's local mode (``sagemaker<3``) and this image:
every file of a folder, split into records by line, sent as mini-batches of many records
(MultiRecord) or one record each (SingleRecord), answered one line per record.

    python examples/sdk_local_mode/batch_transform.py --image sagemaker-torch-serving:latest \
        --model model.tar.gz --input records/ --output out/ --content-type text/csv

Each input file gets ``<name>.out`` in --output, with one line per record, in order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sagemaker import Model
from sagemaker.local import LocalSession

ROLE = "arn:aws:iam::111111111111:role/SageMakerRole"  # local mode never assumes it


def transform(
    image: str,
    model_tar: Path,
    records: Path,
    output: Path,
    content_type: str,
    strategy: str,
    port: int = 8080,
) -> float:
    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": port}}
    model = Model(
        image_uri=image,
        model_data=model_tar.resolve().as_uri(),
        role=ROLE,
        sagemaker_session=session,
    )
    transformer = model.transformer(
        instance_count=1,
        instance_type="local",
        strategy=strategy,  # MultiRecord: as many records per request as MaxPayloadInMB allows
        assemble_with="Line",
        accept=content_type,  # one line per record: text/csv or application/jsonlines
        output_path=output.resolve().as_uri(),
    )
    started = time.monotonic()
    transformer.transform(
        records.resolve().as_uri(),
        content_type=content_type,
        split_type="Line",
        wait=True,
        logs=False,  # the logs are CloudWatch's on SageMaker; local mode prints the container's
    )
    took = time.monotonic() - started
    model.delete_model()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", type=Path, required=True, help="model.tar.gz")
    parser.add_argument("--input", type=Path, required=True, help="a folder of record files")
    parser.add_argument("--output", type=Path, required=True, help="where the .out files go")
    parser.add_argument("--content-type", default="text/csv")
    parser.add_argument(
        "--strategy", default="MultiRecord", choices=["MultiRecord", "SingleRecord"]
    )
    parser.add_argument("--port", type=int, default=8080, help="where local mode serves")
    args = parser.parse_args()
    took = transform(
        args.image,
        args.model,
        args.input,
        args.output,
        args.content_type,
        args.strategy,
        args.port,
    )
    print(f"transform ({args.strategy}) took {took:.1f} s")


if __name__ == "__main__":
    main()
