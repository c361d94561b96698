#!/usr/bin/env python3
"""Send one request to a running server and print the answer (what `make invoke` runs).

    python scripts/invoke.py                          # a held-out digit as PNG to :8080
    python scripts/invoke.py --file x.json --content-type application/json --accept text/csv

Without --file it sends the first held-out digit of the example model (build/heldout.npz,
written by `make model`) as a PNG.
"""

from __future__ import annotations

import argparse
import http.client
import io
import sys
import urllib.parse
from pathlib import Path

from _common import fail

PROG = "invoke"
REPO = Path(__file__).resolve().parents[1]
HELDOUT = REPO / "build" / "heldout.npz"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--file", type=Path, help="the request body (default: a digit PNG)")
    parser.add_argument("--content-type", default="image/png")
    parser.add_argument("--accept", default="application/json")
    parser.add_argument("--custom-attributes", help="X-Amzn-SageMaker-Custom-Attributes")
    args = parser.parse_args(argv)

    if args.file is not None:
        if not args.file.is_file():
            return fail(PROG, f"{args.file} does not exist")
        body = args.file.read_bytes()
    elif HELDOUT.is_file():
        body = sample_digit()
    else:
        return fail(PROG, f"no --file and no {HELDOUT}: run `make model` or pass --file")
    headers = {"Content-Type": args.content_type, "Accept": args.accept}
    if args.custom_attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = args.custom_attributes

    url = urllib.parse.urlsplit(args.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 8080)
    try:
        connection.request("POST", "/invocations", body, headers)
        response = connection.getresponse()
        answer = response.read()
    except OSError as error:
        return fail(PROG, f"cannot reach {args.url}: {error}; is the server running?")
    finally:
        connection.close()
    print(f"{response.status} {response.getheader('Content-Type')}")
    print(answer.decode(errors="replace"))
    return 0 if response.status < 400 else 1


def sample_digit() -> bytes:
    import numpy as np
    from PIL import Image

    image = np.load(HELDOUT)["images"][0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
