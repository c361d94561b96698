"""``python -m sagemaker_torch_serving``: serve the model until SIGTERM."""

import sys

from sagemaker_torch_serving.server.supervisor import main

sys.exit(main())
