"""What users' handler code imports beside ours, written for AWS's stock containers: torchvision
and every module of the SageMaker inference toolkit import and work in this environment (the
image's test runs the same check inside the image)."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import torch


def test_every_sagemaker_inference_module_imports() -> None:
    import sagemaker_inference

    names = [
        info.name
        for info in pkgutil.walk_packages(sagemaker_inference.__path__, "sagemaker_inference.")
    ]
    assert "sagemaker_inference.model_server" in names  # the one that needs pkg_resources
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources' deprecation notice
        for name in names:
            importlib.import_module(name)


def test_torchvision_runs_on_this_torch() -> None:
    # PyPI's torchvision beside a +cpu torch fails here: operator torchvision::nms does not exist.
    from torchvision import ops, transforms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20, 20, 30, 30]])
    keep = ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    image = transforms.ToTensor()(transforms.ToPILImage()(torch.zeros(3, 4, 4)))
    assert image.shape == (3, 4, 4)
