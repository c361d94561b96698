# make serve: serve the example model on 127.0.0.1:8080, as the container will (Ctrl-C stops it)
# make test:  the whole test suite (make test-quick: without the tests that start servers or
#             containers; the container tests need a Docker engine, see .ci/run)
# make sdk-venv: the SageMaker Python SDK (v2) in .venv-sdk, for its local mode (make test uses it)
# make audit: known vulnerabilities (OSV) of the venv's packages and the Java libraries in MMS's
#             jar; exit 1 when some are not accepted, 2 when it could not audit (e.g. offline)
# make predict INPUT="file ..." [MODEL=dir-or-model.tar.gz] [CONTENT_TYPE=...] [ACCEPT=...]
#             [OUTPUT=file]: the model's answers to those files and each stage's time, in this
#             process (no Java, MMS or Docker); code/ serves models that bring none, as in the image
#
# The image: make build [IMAGE=name:tag] [DEVICE=gpu|cpu] [BASE_IMAGE=...] [WHEELHOUSE="dir ..."]
#                       [MULTI_MODEL=1] (the multi-model endpoint variant)
#            make run [MODEL=dir-or-model.tar.gz] [PORT=8080] [GPU=1] [NETWORK=bridge|host]
#            make invoke [PORT=8080]
#            make push [IMAGE=...] [REGION=...] [REPOSITORY=...] [REGISTRY=host:port]
# SageMaker: make deploy IMAGE_URI=<what make push printed> ROLE=<execution role ARN>
#                [ENDPOINT=name] [MODEL=model.tar.gz|s3://...] [REGION=...] [BUCKET=...]
#                [INSTANCE_TYPE=ml.g5.xlarge] [INSTANCE_COUNT=1] (real-time), or
#                [SERVERLESS_MEMORY=1024..6144] [SERVERLESS_CONCURRENCY=5] (serverless)
#                [AUTOSCALE_MIN=1 AUTOSCALE_MAX=4 TARGET_INVOCATIONS=100]
#                [CONTAINER_ENV="SERVING_X=1 ..."] [DEPLOY_ARGS="--invoke-file digit.png ..."]
#            make undeploy [ENDPOINT=name] [REGION=...]: deletes what make deploy made
# Benchmarks: make bench-setup (the official contenders' environments), make bench[-quick]

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The SageMaker Python SDK, for its local mode (examples/sdk_local_mode/), in its own venv.
SDK_VENV ?= .venv-sdk
PLUGIN := sagemaker_torch_serving/java/serving-plugin.jar
CLASS_ARCHIVE := sagemaker_torch_serving/java/frontend.jsa
EXAMPLE := build/model/model.pt

IMAGE ?= sagemaker-torch-serving:latest
DEVICE ?= gpu
BASE_IMAGE ?=
WHEELHOUSE ?=
MULTI_MODEL ?=
MODEL ?= build/model
PORT ?= 8080
GPU ?=
NETWORK ?= bridge
REGION ?=
REPOSITORY ?=
REGISTRY ?=
IMAGE_URI ?=
ROLE ?=
ENDPOINT ?= sagemaker-torch-serving
BUCKET ?=
INSTANCE_TYPE ?=
INSTANCE_COUNT ?=
SERVERLESS_MEMORY ?=
SERVERLESS_CONCURRENCY ?=
AUTOSCALE_MIN ?=
AUTOSCALE_MAX ?=
TARGET_INVOCATIONS ?=
CONTAINER_ENV ?=
DEPLOY_ARGS ?=
# make deploy without MODEL= deploys the example's archive, build/model.tar.gz (not MODEL's
# default, a directory).
DEPLOY_MODEL = $(if $(filter file,$(origin MODEL)),build/model.tar.gz,$(MODEL))
INPUT ?=
CONTENT_TYPE ?=
ACCEPT ?=
OUTPUT ?=

.PHONY: venv sdk-venv plugin model package serve predict test test-quick test-container lint audit clean \
	build run invoke push deploy undeploy bench bench-quick bench-setup

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

sdk-venv: $(SDK_VENV)/.installed
$(SDK_VENV)/.installed: examples/sdk_local_mode/requirements.lock
	$(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

plugin: $(PLUGIN) $(CLASS_ARCHIVE)
$(PLUGIN): $(wildcard sagemaker_torch_serving/java/*.java) scripts/build_plugin.sh $(VENV)/.installed
	scripts/build_plugin.sh $(PY)
$(CLASS_ARCHIVE): $(PLUGIN) sagemaker_torch_serving/java/classes.lst
	$(PY) -m sagemaker_torch_serving.server.class_archive

model: $(EXAMPLE)
$(EXAMPLE): model/train.py code/inference.py $(VENV)/.installed
	$(PY) model/train.py --out build

package: build/model.tar.gz
build/model.tar.gz: $(EXAMPLE) code/inference.py
	$(PY) scripts/package_model.py --model-dir build/model --code-dir code --out $@

serve: venv plugin model
	SERVING_MODEL_DIR=build/model SERVING_CODE_DIR=code SERVING_WARMUP_SHAPE=1,1,8,8 \
		$(PY) -m sagemaker_torch_serving

ifneq ($(filter predict,$(MAKECMDGOALS)),)
ifeq ($(strip $(INPUT)),)
$(error make predict needs INPUT="file ..." (request bodies; - reads stdin), and MODEL=dir-or-model.tar.gz unless build/model)
endif
endif

PREDICT_ARGS = --model $(MODEL) $(foreach file,$(INPUT),--input $(file)) \
	$(if $(CONTENT_TYPE),--content-type '$(CONTENT_TYPE)') $(if $(ACCEPT),--accept '$(ACCEPT)') \
	$(if $(OUTPUT),--output $(OUTPUT))

# The example's model and archive are made first when they are the MODEL.
predict: venv $(if $(filter build/model,$(MODEL)),model) $(filter build/model.tar.gz,$(MODEL))
	SERVING_DEFAULT_CODE_DIR="$${SERVING_DEFAULT_CODE_DIR:-code}" \
		$(PY) -m sagemaker_torch_serving predict $(strip $(PREDICT_ARGS))

test: venv plugin sdk-venv
	$(PY) -m pytest

test-quick: venv
	$(PY) -m pytest tests/unit

test-container: venv plugin
	$(PY) -m pytest tests/integration/test_container.py tests/integration/test_push.py

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

audit: venv
	$(PY) scripts/audit.py --python $(PY)

build: venv
	$(PY) scripts/build.py --tag $(IMAGE) --device $(DEVICE) \
		$(if $(BASE_IMAGE),--base-image $(BASE_IMAGE)) $(foreach dir,$(WHEELHOUSE),--wheelhouse $(dir)) \
		$(if $(MULTI_MODEL),--multi-model)

run: venv
	$(PY) scripts/run_local.py --image $(IMAGE) --model $(MODEL) --port $(PORT) \
		--network $(NETWORK) $(if $(GPU),--gpu)

invoke: venv
	$(PY) scripts/invoke.py --url http://127.0.0.1:$(PORT)

push: venv
	$(PY) scripts/push.py $(IMAGE) $(if $(REGION),--region $(REGION)) \
		$(if $(REPOSITORY),--repository $(REPOSITORY)) $(if $(REGISTRY),--registry $(REGISTRY))

# The example's archive is made first when it is the model (make package).
deploy: venv $(filter build/model.tar.gz,$(DEPLOY_MODEL))
	$(PY) scripts/deploy.py --name $(ENDPOINT) --model $(DEPLOY_MODEL) \
		$(if $(IMAGE_URI),--image $(IMAGE_URI)) $(if $(ROLE),--role $(ROLE)) \
		$(if $(REGION),--region $(REGION)) $(if $(BUCKET),--bucket $(BUCKET)) \
		$(if $(INSTANCE_TYPE),--instance-type $(INSTANCE_TYPE)) \
		$(if $(INSTANCE_COUNT),--instance-count $(INSTANCE_COUNT)) \
		$(if $(SERVERLESS_MEMORY),--serverless-memory $(SERVERLESS_MEMORY)) \
		$(if $(SERVERLESS_CONCURRENCY),--serverless-concurrency $(SERVERLESS_CONCURRENCY)) \
		$(if $(AUTOSCALE_MIN),--autoscale-min $(AUTOSCALE_MIN)) \
		$(if $(AUTOSCALE_MAX),--autoscale-max $(AUTOSCALE_MAX)) \
		$(if $(TARGET_INVOCATIONS),--target-invocations $(TARGET_INVOCATIONS)) \
		$(foreach pair,$(CONTAINER_ENV),--env $(pair)) $(DEPLOY_ARGS)

undeploy: venv
	$(PY) scripts/deploy.py --delete --name $(ENDPOINT) $(if $(REGION),--region $(REGION))

# Benchmarks (commands, not tests): needs wrk (apt-get install wrk) and, for the official
# contenders, their virtual environments (make bench-setup).
bench-setup:
	bench/contenders/setup.sh

bench: venv plugin
	$(PY) -m bench --full

bench-quick: venv plugin
	$(PY) -m bench --quick

clean:
	rm -rf build $(PLUGIN) $(CLASS_ARCHIVE) sagemaker_torch_serving/java/native
