# make serve: serve the example model on 127.0.0.1:8080, as the container will (Ctrl-C stops it)
# make test:  the whole test suite (make test-quick: without the tests that start servers or
#             containers; the container tests need a Docker engine, see .ci/run)
# make audit: known vulnerabilities (OSV) of the venv's packages and the Java libraries in MMS's
#             jar; exit 1 when some are not accepted, 2 when it could not audit (e.g. offline)
#
# The image: make build [IMAGE=name:tag] [DEVICE=gpu|cpu] [BASE_IMAGE=...] [WHEELHOUSE="dir ..."]
#            make run [MODEL=dir-or-model.tar.gz] [PORT=8080] [GPU=1] [NETWORK=bridge|host]
#            make invoke [PORT=8080]
#            make push [IMAGE=...] [REGION=...] [REPOSITORY=...] [REGISTRY=host:port]
# Benchmarks: make bench-setup (the official contenders' environments), make bench[-quick]

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGIN := sagemaker_torch_serving/java/serving-plugin.jar
EXAMPLE := build/model/model.pt

IMAGE ?= sagemaker-torch-serving:latest
DEVICE ?= gpu
BASE_IMAGE ?=
WHEELHOUSE ?=
MODEL ?= build/model
PORT ?= 8080
GPU ?=
NETWORK ?= bridge
REGION ?=
REPOSITORY ?=
REGISTRY ?=

.PHONY: venv plugin model package serve test test-quick test-container lint audit clean \
	build run invoke push bench bench-quick bench-setup

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

plugin: $(PLUGIN)
$(PLUGIN): $(wildcard sagemaker_torch_serving/java/*.java) scripts/build_plugin.sh $(VENV)/.installed
	scripts/build_plugin.sh $(PY)

model: $(EXAMPLE)
$(EXAMPLE): model/train.py code/inference.py $(VENV)/.installed
	$(PY) model/train.py --out build

package: build/model.tar.gz
build/model.tar.gz: $(EXAMPLE) code/inference.py
	$(PY) scripts/package_model.py --model-dir build/model --code-dir code --out $@

serve: venv plugin model
	SERVING_MODEL_DIR=build/model SERVING_CODE_DIR=code SERVING_WARMUP_SHAPE=1,1,8,8 \
		$(PY) -m sagemaker_torch_serving

test: venv plugin
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
		$(if $(BASE_IMAGE),--base-image $(BASE_IMAGE)) $(foreach dir,$(WHEELHOUSE),--wheelhouse $(dir))

run: venv
	$(PY) scripts/run_local.py --image $(IMAGE) --model $(MODEL) --port $(PORT) \
		--network $(NETWORK) $(if $(GPU),--gpu)

invoke: venv
	$(PY) scripts/invoke.py --url http://127.0.0.1:$(PORT)

push: venv
	$(PY) scripts/push.py $(IMAGE) $(if $(REGION),--region $(REGION)) \
		$(if $(REPOSITORY),--repository $(REPOSITORY)) $(if $(REGISTRY),--registry $(REGISTRY))

# Benchmarks (commands, not tests): needs wrk (apt-get install wrk) and, for the official
# contenders, their virtual environments (make bench-setup).
bench-setup:
	bench/contenders/setup.sh

bench: venv plugin
	$(PY) -m bench --full

bench-quick: venv plugin
	$(PY) -m bench --quick

clean:
	rm -rf build $(PLUGIN) sagemaker_torch_serving/java/native
