"""The user's handler bound to a loaded model: what a worker, or any in-process tool, serves.

Order matters and is the official toolkits': torch's threads are set first, then the user's
module is imported and checked (contract.py), the device is chosen, the model is loaded by the
user's ``model_fn`` or the default one (model_loading.py), and zeros of SERVING_WARMUP_SHAPE go
through it once.
"""

from __future__ import annotations

from typing import Any

import torch

from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.contract import load_contract
from sagemaker_torch_serving.handler.model_loading import load_model, select_device
from sagemaker_torch_serving.handler.pipeline import Pipeline
from sagemaker_torch_serving.settings import Settings


def build_pipeline(settings: Settings, system_properties: dict[str, Any]) -> Pipeline:
    """Load the model as ``settings`` say; ``system_properties`` is what ``context`` shows
    (``gpu_id``, ...), completed here with ``model_dir`` and ``device``."""
    torch.set_num_threads(settings.torch_threads)
    contract = load_contract(settings.program_path, required=settings.program is not None)
    device = select_device(settings.device, system_properties.get("gpu_id"))
    system_properties.update(model_dir=str(settings.model_dir), device=str(device))
    if contract.model_fn is not None:
        context = ServingContext(system_properties)
        model = contract.model_fn(str(settings.model_dir), context=context)
    else:
        model = load_model(
            settings.model_dir, device, settings.trust_pickled_model, settings.half_precision
        )
    pipeline = Pipeline(settings, contract, model, system_properties)
    pipeline.warm_up()
    return pipeline
