"""The predict command (``python -m sagemaker_torch_serving predict``, ``make predict``): a model
directory or model.tar.gz run in this process on a few inputs, through the handler path a worker
runs (handler/), without Java, MMS or Docker: what a user runs first to debug ``inference.py``.
A role beside server/ and backend/: it imports the handler path and the leaf modules only."""
