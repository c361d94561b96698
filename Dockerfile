# The serving image: MMS (Java 17) and the runtime in a Python virtual environment.
#
# Default: a GPU image on NVIDIA's CUDA 13.0 base (cudart and the forward-compatibility driver;
# torch's wheels bring the other CUDA libraries) with PyPI's torch 2.14.1 and torchvision 0.29.1,
# built for CUDA 13.0. It runs on driver 580 or newer, and on SageMaker's 535 and 550 drivers
# through CUDA forward compatibility, which the entrypoint turns on (cuda_compat.py).
# `make build DEVICE=cpu` builds the same Python stack on debian:bookworm-slim (scripts/build.py).
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# g++ and the Python headers: torch.compile's inductor compiles C++ at run time (SERVING_COMPILE).
FROM ${BASE_IMAGE} AS system
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev g++ openjdk-17-jre-headless ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Python packages: the torch stack first, in its own layer, so that other changes do not
# reinstall it. PIP_FIND_LINKS (scripts/build.py --wheelhouse) offers local wheels to pip.
# The serving stage builds on this one rather than copying /opt/venv out of it: a copy would
# store the 6 GB torch stack twice in the engine (CI's disk ran out that way).
FROM system AS python
ARG PIP_FIND_LINKS=
ARG ONNXRUNTIME=onnxruntime
COPY docker/torch.lock /tmp/build/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      -r /tmp/build/torch.lock
COPY docker/requirements.lock /tmp/build/
RUN grep -v '^onnxruntime==' /tmp/build/requirements.lock > /tmp/build/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      -r /tmp/build/requirements.txt \
      "$(grep "^${ONNXRUNTIME}==" /tmp/build/requirements.lock || echo "$ONNXRUNTIME")" \
 && rm -rf /tmp/build

# The MMS plugin behind /ping, compiled against the MMS jar of the pinned release (in a venv of
# its own: copying the runtime's, torch and all, would cost minutes for one jar).
FROM system AS plugin
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/*
COPY docker/requirements.lock /tmp/build/
RUN python3 -m venv /opt/mms \
 && /opt/mms/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      "$(grep '^multi-model-server==' /tmp/build/requirements.lock)"
COPY scripts/build_plugin.sh /src/scripts/
COPY sagemaker_torch_serving/java/*.java /src/sagemaker_torch_serving/java/
RUN /src/scripts/build_plugin.sh /opt/mms/bin/python

FROM python AS serving
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
# The frontend's class data archive, for this JVM and these jars (server/class_archive.py).
RUN python -m compileall -q /opt/program \
 && python -m sagemaker_torch_serving.server.class_archive
# Only what the container truly does: it serves on SAGEMAKER_BIND_TO_PORT.
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "/opt/program/entrypoint.py"]
CMD ["serve"]

# The multi-model endpoint variant (make build MULTI_MODEL=1, the build's target multi-model):
# the label lets SageMaker host it as one, and it serves /models also where nobody sets
# SAGEMAKER_MULTI_MODEL (docker run).
FROM serving AS multi-model
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true
ENV SAGEMAKER_MULTI_MODEL=true

# The default target: the single-model image.
FROM serving AS single-model
