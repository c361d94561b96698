"""A SageMaker serving runtime for PyTorch models on Multi Model Server.

``python -m sagemaker_torch_serving`` serves the model; see server.py for how, settings.py for
every setting, and pipeline.py for what happens to one request.
"""
