"""Write the example's model as the document does: ``torch.save(model, 'best.pt')``.

The model (``code/classifier.py``) has random weights: the example shows how a whole pickled
torchvision-style classifier is served, not a trained one. It writes ``<out>/best.pt``
(about 0.4 MB) in a second or two on a CPU, and, with ``--image``, a test image (an RGBA PNG,
as a screenshot or an image with transparency is).

python examples/image_classifier/make_model.py --out build/image_classifier
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CODE_DIR = Path(__file__).resolve().parent / "code"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the model directory to write")
    parser.add_argument("--image", type=Path, help="also write a test PNG (RGBA) here")
    args = parser.parse_args()

    # Import the class as the server will find it, as top-level module "classifier": pickle
    # records that name, and unpickling imports it from the code directory on sys.path.
    sys.path.insert(0, str(CODE_DIR))
    from classifier import ImageClassifier

    torch.manual_seed(0)
    model = ImageClassifier().eval()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model, args.out / "best.pt")
    print(f"wrote {args.out / 'best.pt'} ({(args.out / 'best.pt').stat().st_size} bytes)")
    if args.image is not None:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, size=(64, 48, 4), dtype=np.uint8)
        Image.fromarray(pixels).save(args.image)
        print(f"wrote {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
