"""``python -m sagemaker_torch_serving [serve]``: serve the model until SIGTERM (server/).
``python -m sagemaker_torch_serving predict --model DIR_OR_TAR_GZ --input FILE ...``: run the model
in this process on a few inputs, through the workers' handler path (predict/).

Each command imports its own role only, when it runs: serving never imports torch here.
"""

import sys

USAGE = (
    "usage: python -m sagemaker_torch_serving [serve | predict --model DIR_OR_TAR_GZ "
    "--input FILE [--input FILE ...] [--content-type TYPE] [--accept TYPES] [--output FILE]]"
)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command == "serve":
        if len(argv) > 1:
            print(f"serving: serve takes no arguments, got {argv[1:]}; {USAGE}", file=sys.stderr)
            return 2
        from sagemaker_torch_serving.server.supervisor import main as serve

        return serve()
    if command == "predict":
        from sagemaker_torch_serving.predict.cli import main as predict

        return predict(argv[1:])
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    print(f"sagemaker_torch_serving: unknown command {command!r}; {USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
