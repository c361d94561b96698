"""A SageMaker serving runtime for PyTorch models on Multi Model Server.

``python -m sagemaker_torch_serving`` serves the model. The folders are the process roles:
``server/`` (the serving process), ``backend/`` (MMS's Python workers), ``java/`` (the plugin in
MMS's Java frontend) and ``handler/`` (the user's handler and the defaults, used by the workers
and by any in-process tool); the modules beside them are leaves every role uses. See
docs/architecture.md.
"""
