#!/usr/bin/env bash
# Builds sagemaker_torch_serving/java/serving-plugin.jar, the MMS plugin behind an honest /ping,
# batching for models loaded at start, draining, and a fixed decoder of the workers' answers,
# against the MMS jar of the given Python (default: python3). Needs a JDK (javac, jar).
# Also takes Netty's epoll library out of the MMS jar into java/native/, which server.py puts
# on java.library.path: Netty otherwise unpacks it into the temp folder at every start, which
# fails where that folder is noexec (Docker's --tmpfs default), and MMS then falls back to
# NIO, under which its management API cannot use a Unix socket.
set -euo pipefail
python=${1:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
mms_jar=$("$python" -c 'import mms, pathlib; print(pathlib.Path(mms.__file__).parent / "frontend" / "model-server.jar")')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
javac --release 11 -nowarn -cp "$mms_jar" -d "$out" "$root"/sagemaker_torch_serving/java/*.java
mkdir -p "$out/META-INF/services"
printf '%s\n' sagemaker.serving.ReadinessPing sagemaker.serving.ServingControl \
  sagemaker.serving.ExecutionParameters \
  > "$out/META-INF/services/software.amazon.ai.mms.servingsdk.ModelServerEndpoint"
jar cf "$root/sagemaker_torch_serving/java/serving-plugin.jar" -C "$out" .
native="$root/sagemaker_torch_serving/java/native"
mkdir -p "$native" "$out/jar"
(cd "$out/jar" && jar xf "$mms_jar" META-INF/native/)
cp "$out"/jar/META-INF/native/libnetty_transport_native_epoll_*.so "$native/"
