#!/usr/bin/env python3
"""The container's entry point: ``serve`` starts the server; anything else is run as a command.

SageMaker runs the image with the single argument ``serve``. ``docker run IMAGE bash`` (or any
other command) replaces this process with that command, as an image without an entry point
would. Either way CUDA forward compatibility is arranged first (cuda_compat.py), because the
library path must be right before any process loads CUDA.
"""

import os
import sys

from sagemaker_torch_serving.cuda_compat import enable_forward_compat


def main(argv: list[str]) -> int:
    line = enable_forward_compat(os.environ)
    if line:
        print(f"entrypoint: {line}", file=sys.stderr, flush=True)
    if argv[:1] == ["serve"]:
        from sagemaker_torch_serving.server.supervisor import main as serve

        return serve()
    if not argv:
        print("usage: entrypoint.py serve | COMMAND [ARG ...]", file=sys.stderr)
        return 2
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        print(f"entrypoint: cannot run {argv[0]!r}: {error.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
