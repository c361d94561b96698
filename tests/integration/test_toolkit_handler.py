"""Handler code written for AWS's stock containers, served unchanged by the real server: a
DefaultInferenceHandler subclass (SERVING_HANDLER_CLASS), the toolkit's errors, its decoder."""

from __future__ import annotations

import io
import json
import pathlib
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from tests.integration.test_server import CUSTOM_ATTRIBUTES, assert_json_error, npy, post

# In the toolkit's own style: the runtime's predict_fn (a batched forward pass) where the class
# has none; the optional pre_model_fn and model_warmup_fn run at load, in the toolkit's order.
HANDLER = """
import torch
from sagemaker_inference import decoder, default_inference_handler, encoder, errors


class Handler(default_inference_handler.DefaultInferenceHandler):
    def __init__(self):
        self.steps = []

    def default_pre_model_fn(self, model_dir):
        self.steps.append("pre_model_fn")

    def default_model_fn(self, model_dir, context=None):
        self.steps.append("model_fn")
        device = context.system_properties["device"]
        return torch.jit.load(f"{model_dir}/model.pt", map_location=device)

    def default_model_warmup_fn(self, model_dir, model):
        self.steps.append("model_warmup_fn")

    def default_input_fn(self, input_data, content_type, context=None):
        if context.custom_attributes == "deny":
            raise errors.GenericInferenceToolkitError(403, "not this caller", "Forbidden")
        if content_type not in ("application/json", "application/x-npy"):
            raise errors.UnsupportedFormatError(content_type)
        return torch.as_tensor(decoder.decode(input_data, content_type), dtype=torch.float32)

    def default_output_fn(self, prediction, accept, context=None):
        context.set_response_header(0, "X-Steps", ",".join(self.steps))
        context.set_custom_attributes("model_dir=" + context.system_properties["model_dir"])
        return encoder.encode(prediction.tolist(), "application/json"), "application/json"
"""

# Only what the stock toolkit requires (model_fn, predict_fn); input and output are the
# toolkit's defaults, which give predict_fn numpy arrays.
STOCK_STYLE = """
import torch
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler


class StockStyle(DefaultInferenceHandler):
    def default_model_fn(self, model_dir):
        return torch.jit.load(f"{model_dir}/model.pt")

    def default_predict_fn(self, data, model):
        if data.sum() < 0:
            return 1 / 0
        return model(torch.from_numpy(data).float()).numpy()
"""


class _Touch:
    """Unpickling this creates the file at ``path``: what a client's pickle could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def pickled_npy(path: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Touch(path)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def write_module(tmp_path: Path, name: str, source: str) -> Path:
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / f"{name}.py").write_text(textwrap.dedent(source))
    return code_dir


def test_a_toolkit_handler_class_is_served_with_batching_errors_and_context(
    tmp_path, start_server, scale_model
):
    code = write_module(tmp_path, "handler", HANDLER)
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SERVING_CODE_DIR=str(code),
        SERVING_HANDLER_CLASS="handler:Handler",
        SAGEMAKER_MODEL_SERVER_BATCH_SIZE="8",
        SERVING_MAX_BATCH_DELAY_MS="200",
    )
    server.wait_ready()
    assert server.wait_for_log("handler:Handler: user Handler.default_pre_model_fn")

    response = post(server, b"[[1, 2]]", "application/json")
    assert response.status_code == 200, response.text
    assert response.json() == [[2.0, 4.0, 1.0]]
    assert response.headers["X-Steps"] == "pre_model_fn,model_fn,model_warmup_fn"
    assert response.headers[CUSTOM_ATTRIBUTES] == f"model_dir={scale_model}"

    def call(index: int) -> requests.Response:
        return post(server, json.dumps([[index, index + 0.5]]).encode(), "application/json")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(16)))
    rows = []
    for index, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        row = answer.json()[0]
        assert row[:2] == [index * 2.0, index * 2.0 + 1.0]
        rows.append(row[2])
    assert max(rows) > 1, "no two requests shared a forward pass"

    body = assert_json_error(post(server, b"x", "application/x-parquet"), 415)
    assert body["message"] == (
        "Content type application/x-parquet is not supported by this framework."
    )
    denied = post(server, b"[[1]]", "application/json", **{CUSTOM_ATTRIBUTES: "deny"})
    assert assert_json_error(denied, 403)["message"] == "Forbidden: not this caller"

    target = tmp_path / "pwned"
    body = assert_json_error(post(server, pickled_npy(target), "application/x-npy"), 400)
    assert "never unpickles" in body["message"]
    assert not target.exists()
    response = post(server, npy(np.array([[3.0, 4.0]])), "application/x-npy")
    assert response.json() == [[6.0, 8.0, 1.0]]


def test_the_toolkits_default_input_and_output_run_as_in_the_stock_container(
    tmp_path, start_server, scale_model
):
    code = write_module(tmp_path, "stock_handler", STOCK_STYLE)
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SERVING_CODE_DIR=str(code),
        SERVING_HANDLER_CLASS="stock_handler:StockStyle",
    )
    server.wait_ready()

    # text/csv reaches the toolkit's decoder as text, as in the stock container.
    response = post(server, b"1,2\n3,4\n", "text/csv", Accept="application/json")
    assert response.status_code == 200, response.text
    assert response.json() == [[2.0, 4.0, 2.0], [6.0, 8.0, 2.0]]
    response = post(server, b"[[1, 2]]", "application/json", Accept="text/csv")
    assert response.headers["Content-Type"] == "text/csv"
    assert response.text.strip() == "2.0,4.0,1.0"

    target = tmp_path / "pwned"
    assert_json_error(post(server, pickled_npy(target), "application/x-npy"), 400)
    assert not target.exists()

    assert_json_error(post(server, b"x", "application/x-parquet"), 415)
    assert_json_error(post(server, b"[[1]]", "application/json", Accept="text/html"), 406)
    body = assert_json_error(post(server, b"[[-1]]", "application/json"), 500)
    assert body["message"] == (
        "StockStyle.default_predict_fn failed: ZeroDivisionError: division by zero"
    )
    assert post(server, b"[[1]]", "application/json").json() == [[2.0, 1.0]]


def test_a_bad_handler_class_stops_the_server_with_one_line(tmp_path, start_server, scale_model):
    code = write_module(tmp_path, "stock_handler", STOCK_STYLE)
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SERVING_CODE_DIR=str(code),
        SERVING_HANDLER_CLASS="stock_handler:Missing",
    )
    assert server.process.wait(60) == 1
    assert (
        "the model failed to load: ContractError: SERVING_HANDLER_CLASS=stock_handler:Missing: "
        f"{code / 'stock_handler.py'} has no Missing" in server.log()
    )
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_HANDLER_CLASS="Handler")
    assert server.process.wait(30) == 2
    assert "SERVING_HANDLER_CLASS must be module:Class" in server.log()
