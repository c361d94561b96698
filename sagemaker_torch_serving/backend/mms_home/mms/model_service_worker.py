"""The backend worker MMS's frontend runs for the model: ours (sagemaker_torch_serving/backend/).

MMS runs ``<python> <model_server_home>/mms/model_service_worker.py ARGS``; server/mms_config.py
sets model_server_home to the folder above this one.
"""

import sys
from pathlib import Path

# Python put this file's folder first on the path; it holds nothing to import.
here = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]

from sagemaker_torch_serving.backend.process import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
