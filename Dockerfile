# The serving image: MMS (Java 17) and the runtime in a Python virtual environment.
#
# Default: a GPU image on NVIDIA's CUDA 12.8 runtime with torch built for CUDA 12.8. It runs on
# driver 570 or newer, and on SageMaker's older data-center drivers (470, 535, 550) through
# CUDA forward compatibility, which the entrypoint turns on (sagemaker_torch_serving/cuda_compat.py).
# `make build DEVICE=cpu` builds a CPU image instead (scripts/build.py sets these arguments).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS system
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv openjdk-17-jre-headless ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Python packages: torch first, in its own layer, so that other changes do not reinstall it.
FROM system AS python
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=+cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG ONNXRUNTIME=onnxruntime
# The wildcard copies the optional wheelhouse/ of the build context (extra wheels, e.g. torch,
# for builds without a package index); the build does not fail when there is none.
COPY docker/requirements.lock wheelhous[e] /tmp/build/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/build ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      -c /tmp/build/requirements.lock "torch==${TORCH_VERSION}${TORCH_VARIANT}"
RUN grep -v '^onnxruntime==' /tmp/build/requirements.lock > /tmp/build/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/build -r /tmp/build/requirements.txt \
      "$(grep "^${ONNXRUNTIME}==" /tmp/build/requirements.lock || echo "$ONNXRUNTIME")"

# The MMS plugin behind /ping, compiled against the MMS jar just installed.
FROM system AS plugin
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/*
COPY --from=python /opt/venv /opt/venv
COPY scripts/build_plugin.sh /src/scripts/
COPY sagemaker_torch_serving/java/*.java /src/sagemaker_torch_serving/java/
RUN /src/scripts/build_plugin.sh /opt/venv/bin/python

FROM system
COPY --from=python /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/program \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVING_HOST=0.0.0.0 \
    SERVING_DEFAULT_CODE_DIR=/opt/program/code
COPY code/ /opt/program/code/
COPY entrypoint.py /opt/program/
COPY sagemaker_torch_serving/ /opt/program/sagemaker_torch_serving/
COPY --from=plugin /src/sagemaker_torch_serving/java/ /opt/program/sagemaker_torch_serving/java/
RUN python -m compileall -q /opt/program
# Only what the container truly does: it serves on SAGEMAKER_BIND_TO_PORT. It does not serve
# several models (no com.amazonaws.sagemaker.capabilities.multi-models label).
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "/opt/program/entrypoint.py"]
CMD ["serve"]
