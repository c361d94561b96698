"""What the contender launchers share: their command line, and the environment that the
toolkits read when they are imported."""

import argparse
import os
import sys
import tempfile
from pathlib import Path


def prepare(description: str, scratch_prefix: str) -> None:
    """Parse --model-root and --port, set SageMaker's variables, and move to a scratch folder
    (the toolkits' model servers write their logs under ./logs)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-root", type=Path, required=True, help="DIR/model is the model")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ["SAGEMAKER_BASE_DIR"] = str(args.model_root.resolve())
    os.environ["SAGEMAKER_BIND_TO_PORT"] = str(args.port)
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    os.chdir(tempfile.mkdtemp(prefix=scratch_prefix))
