"""``python -m sagemaker_torch_serving.backend --handover SOCKET``: a backend the serving process
starts ahead of MMS (process.py says why)."""

import argparse
from pathlib import Path

from sagemaker_torch_serving.backend.process import prestart

parser = argparse.ArgumentParser(description="a backend started ahead of MMS")
parser.add_argument("--handover", type=Path, required=True)
prestart(parser.parse_args().handover)
