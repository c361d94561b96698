"""The example's model class: a tiny image classifier built from torchvision's blocks.

``torch.save(model, ...)`` pickles the model by reference to this class (``classifier.
ImageClassifier``), so unpickling imports this module. It sits in ``code/`` next to
``inference.py`` because the runtime puts the code directory on ``sys.path``: where
``model_fn`` runs, ``import classifier`` works.
"""

import itertools

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

NUM_CLASSES = 10


class ImageClassifier(nn.Module):
    """RGB images ``[N, 3, H, W]`` (any size; the handlers send 224x224) to ``[N, classes]``
    logits: four strided convolutions, global average pooling, one linear layer."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        channels = [3, 16, 32, 64, 96]
        self.features = nn.Sequential(
            *(
                Conv2dNormActivation(c_in, c_out, kernel_size=3, stride=2)
                for c_in, c_out in itertools.pairwise(channels)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
