# make serve: serve the example model on 127.0.0.1:8080, as the container will (Ctrl-C stops it)
# make test:  the whole test suite (make test-quick: without the tests that start servers)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGIN := sagemaker_torch_serving/java/serving-plugin.jar
MODEL := build/model/model.pt

.PHONY: venv plugin model package serve test test-quick lint clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

plugin: $(PLUGIN)
$(PLUGIN): $(wildcard sagemaker_torch_serving/java/*.java) $(VENV)/.installed
	scripts/build_plugin.sh $(PY)

model: $(MODEL)
$(MODEL): model/train.py code/inference.py $(VENV)/.installed
	$(PY) model/train.py --out build

package: build/model.tar.gz
build/model.tar.gz: $(MODEL) code/inference.py
	$(PY) scripts/package_model.py --model-dir build/model --code-dir code --out $@

serve: venv plugin model
	SERVING_MODEL_DIR=build/model SERVING_CODE_DIR=code SERVING_WARMUP_SHAPE=1,1,8,8 \
		$(PY) -m sagemaker_torch_serving

test: venv plugin
	$(PY) -m pytest

test-quick: venv plugin
	$(PY) -m pytest -m "not slow"

lint: venv
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf build $(PLUGIN)
