"""python -m sagemaker_torch_serving.server.class_archive: the frontend's class data archive.

With it (java/frontend.jsa, class data sharing) the JVM maps the classes it needs at start
instead of reading, parsing and verifying them from the jars: less CPU taken from the backend's
import of torch, which the JVM's start overlaps, and about 0.25 s less from make serve's start
to its first answer (python -m bench.coldstart). make plugin and the image's build make it; it
is only good for the JVM and the jars it was made with, and the JVM ignores one that does not
match them (the frontend then starts as it would without).

java/classes.lst names the classes: those a server loaded through its start, a prediction,
an error answer and GET /execution-parameters. To make it again after a change of MMS or of
the plugin: serve with SAGEMAKER_MODEL_SERVER_VMARGS="<the default> -XX:DumpLoadedClassList=
sagemaker_torch_serving/java/classes.lst", make those calls, stop the server.
"""

from __future__ import annotations

import subprocess
import sys

from sagemaker_torch_serving.server.mms_config import CLASS_ARCHIVE, PACKAGE, class_path, java
from sagemaker_torch_serving.settings import DEFAULT_VMARGS

CLASS_LIST = PACKAGE / "java" / "classes.lst"


def main() -> int:
    CLASS_ARCHIVE.unlink(missing_ok=True)
    dumped = subprocess.run(
        [
            java(),
            *DEFAULT_VMARGS.split(),
            "-Xshare:dump",
            f"-XX:SharedClassListFile={CLASS_LIST}",
            f"-XX:SharedArchiveFile={CLASS_ARCHIVE}",
            "-Xlog:cds=off",
            "-cp",
            class_path(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if dumped.returncode != 0 or not CLASS_ARCHIVE.exists():
        print(dumped.stdout, file=sys.stderr)
        print(f"could not make {CLASS_ARCHIVE}", file=sys.stderr)
        return 1
    print(f"made {CLASS_ARCHIVE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
