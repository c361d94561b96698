#!/usr/bin/env python3
"""Write model.tar.gz in SageMaker's layout: model files at the root, handler code in code/.

python scripts/package_model.py --model-dir build/model --code-dir code --out build/model.tar.gz
"""

import argparse
import sys
from pathlib import Path

from _common import fail

from sagemaker_torch_serving.archive import ArchiveError, pack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="the model file(s)")
    parser.add_argument("--code-dir", type=Path, help="inference.py and requirements.txt")
    parser.add_argument("--out", type=Path, required=True, help="the .tar.gz to write")
    args = parser.parse_args()
    try:
        pack(args.out, args.model_dir, args.code_dir)
    except ArchiveError as error:
        return fail("package_model", error)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
