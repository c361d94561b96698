"""The request pipeline in-process: contract, defaults, batching and error answers."""

from __future__ import annotations

import gc
import io
import json
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image

from sagemaker_torch_serving.handler.context import CUSTOM_ATTRIBUTES, ServingContext
from sagemaker_torch_serving.handler.contract import Contract, load_contract
from sagemaker_torch_serving.handler.pipeline import Pipeline, Request
from sagemaker_torch_serving.settings import Settings
from tests.conftest import Scale


def make_pipeline(tmp_path: Path, source: str | None = None, **env: str) -> Pipeline:
    contract = Contract()
    if source is not None:
        module = tmp_path / "inference.py"
        module.write_text(textwrap.dedent(source))
        contract = load_contract(module, required=True)
    settings = Settings.from_env({"SERVING_MODEL_DIR": str(tmp_path), **env})
    return Pipeline(settings, contract, torch.jit.script(Scale()), {"gpu_id": None})


def request(body: bytes, content_type: str | None = "application/json", **headers: str):
    lowered = {name.lower(): value for name, value in headers.items()}
    return Request(
        request_id=f"id-{body[:8]!r}",
        body=body,
        content_type=content_type,
        accept=lowered.get("accept"),
        context=ServingContext({}, "id", lowered),
    )


def test_requests_of_one_shape_share_a_forward_pass_and_bad_ones_fail_alone(tmp_path):
    pipeline = make_pipeline(tmp_path)
    answers = pipeline.run(
        [
            request(b"[[1, 2]]"),
            request(b"[[3, 4], [5, 6]]"),
            request(b"[[1, 2], [3]]"),  # ragged: cannot decode
            request(b"[7, 8]"),  # 1-D: decodes, does not fit the model
            request(b"[[9, 10]]", Accept="text/csv"),
        ]
    )
    assert [answer.status for answer in answers] == [200, 200, 400, 400, 200]
    assert json.loads(answers[0].body) == [[2.0, 4.0, 4.0]]  # 4 rows in the forward pass
    assert json.loads(answers[1].body) == [[6.0, 8.0, 4.0], [10.0, 12.0, 4.0]]
    assert answers[4].body == b"18,20,4\n"
    assert answers[4].content_type == "text/csv"
    assert "does not fit the model" in json.loads(answers[3].body)["message"]


def test_a_failed_shared_pass_is_retried_request_by_request(tmp_path):
    pipeline = make_pipeline(tmp_path)

    def picky(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise RuntimeError("this model takes one row at a time")
        return x + 1

    pipeline.predictor.model = picky
    answers = pipeline.run([request(b"[[1]]"), request(b"[[2]]")])
    assert [json.loads(answer.body) for answer in answers] == [[[2.0]], [[3.0]]]


def test_user_functions_with_context_and_custom_attributes(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def input_fn(body, content_type, context):
            # JSON arrives as text, as the official toolkit hands it to input_fn.
            assert content_type == "application/json" and isinstance(body, str)
            return [float(x) for x in body.split()]

        def predict_fn(data, model):
            return {"sum": sum(data)}

        def output_fn(prediction, accept, context):
            context.set_custom_attributes("got=" + str(context.custom_attributes))
            return prediction
        """,
    )
    answer = pipeline.run(
        [request(b"1 2 3", "application/json; charset=utf-8", **{CUSTOM_ATTRIBUTES: "a=1"})]
    )[0]
    assert answer.status == 200
    assert json.loads(answer.body) == {"sum": 6.0}
    assert answer.content_type == "application/json"
    assert answer.headers[CUSTOM_ATTRIBUTES] == "got=a=1"


def test_transform_fn_answers_with_the_type_it_returns(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def transform_fn(model, body, content_type, accept):
            return body.upper(), "text/plain"
        """,
    )
    answer = pipeline.run([request(b"abc", "text/plain")])[0]
    assert (answer.status, answer.body, answer.content_type) == (200, b"ABC", "text/plain")


def test_errors_map_to_statuses_a_client_can_act_on(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        class TooManyRequests(Exception):
            status_code = 429

        def predict_fn(data, model):
            value = float(data.sum())
            if value == 1:
                raise TooManyRequests("slow down")
            if value == 2:
                raise MemoryError()
            if value == 3:
                raise KeyError("bug")
            return model(data)
        """,
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1",
    )
    answers = pipeline.run(
        [
            request(b"[[1]]"),
            request(b"[[2]]"),
            request(b"[[3]]"),
            request(b"[[4]]", Accept="image/png"),
            request(b"x", "text/plain"),
            request(b" " * (1024 * 1024 + 1)),
        ]
    )
    assert [answer.status for answer in answers] == [429, 507, 500, 406, 415, 413]
    for answer in answers:
        body = json.loads(answer.body)
        assert body["code"] == answer.status
        assert body["request_id"]
        assert answer.content_type == "application/json"
    assert json.loads(answers[0].body)["message"] == "slow down"
    # A bug in user code: the client learns which function failed and how, not the traceback.
    assert json.loads(answers[2].body)["message"] == "predict_fn failed: KeyError: 'bug'"


def test_an_answer_over_the_payload_limit_is_an_error(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def output_fn(prediction, accept):
            return b"x" * (1024 * 1024 + 1)
        """,
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1",
    )
    answer = pipeline.run([request(b"[[1]]")])[0]
    assert answer.status == 500
    assert "over the 1048576-byte limit" in json.loads(answer.body)["message"]


def test_warm_up_runs_the_model_once(tmp_path):
    pipeline = make_pipeline(tmp_path, SERVING_WARMUP_SHAPE="2,3")
    calls = []
    model = pipeline.predictor.model
    pipeline.predictor.model = lambda x: calls.append(tuple(x.shape)) or model(x)
    pipeline.warm_up()
    assert calls == [(2, 3)]


NONE_ANSWER = (
    "returned None for accept='{accept}'; it must return the answer's body (bytes or str), "
    "or (body, content_type)"
)


@pytest.mark.parametrize(
    ("source", "function"),
    [
        ("def output_fn(prediction, accept):\n    return None\n", "output_fn"),
        ("def output_fn(prediction, accept):\n    return None, 'text/plain'\n", "output_fn"),
        ("def transform_fn(model, body, content_type, accept):\n    pass\n", "transform_fn"),
    ],
)
def test_a_user_function_that_returns_no_answer_is_a_500_that_says_so(tmp_path, source, function):
    pipeline = make_pipeline(tmp_path, source)
    answers = pipeline.run([request(b"[[1]]"), request(b"[[1]]", Accept="text/csv")])
    assert [answer.status for answer in answers] == [500, 500]
    # Which accept it got: no Accept header is the default, application/json.
    assert [json.loads(answer.body)["message"] for answer in answers] == [
        f"{function} {NONE_ANSWER.format(accept=accept)}"
        for accept in ("application/json", "text/csv")
    ]


FAILING = """
def input_fn(body, content_type):
    if body == "input":
        raise KeyError("no field 'x'")
    return body

def predict_fn(data, model):
    if data == "predict":
        return 1 / 0
    return data

def output_fn(prediction, accept):
    if prediction == "output":
        raise TypeError("\\x1b[31mcannot encode\\x1b[0m a set")
    return prediction
"""


def test_a_500_names_the_user_function_that_failed_and_how(tmp_path, caplog):
    pipeline = make_pipeline(tmp_path, FAILING)
    answers = pipeline.run([request(b"input"), request(b"predict"), request(b"output")])
    assert [answer.status for answer in answers] == [500, 500, 500]
    assert [json.loads(answer.body)["message"] for answer in answers] == [
        "input_fn failed: KeyError: \"no field 'x'\"",
        "predict_fn failed: ZeroDivisionError: division by zero",
        "output_fn failed: TypeError: cannot encode a set",
    ]
    assert "Traceback" in caplog.text  # the traceback is in the log, only there
    assert "1 / 0" in caplog.text


def test_a_500_from_transform_fn_names_it(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def transform_fn(model, body, content_type, accept):
            return {"a": 1}["b"]
        """,
    )
    answer = pipeline.run([request(b"[[1]]")])[0]
    assert (answer.status, json.loads(answer.body)["message"]) == (
        500,
        "transform_fn failed: KeyError: 'b'",
    )


def test_a_500_from_a_default_names_the_default(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def predict_fn(data, model):
            return object()  # the default output_fn cannot encode it
        """,
    )
    answer = pipeline.run([request(b"[[1]]")])[0]
    assert answer.status == 500
    assert json.loads(answer.body)["message"].startswith(
        "the default output_fn failed: TypeError: "
    )


def test_json_and_csv_bodies_reach_user_code_as_text_as_in_the_official_toolkit(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def transform_fn(model, body, content_type, accept):
            return type(body).__name__ + ":" + (body if isinstance(body, str) else body.hex())
        """,
    )
    answers = pipeline.run(
        [request(b"1,2", "text/csv"), request(b"\x00\xff", "application/octet-stream")]
    )
    assert [answer.body for answer in answers] == [b"str:1,2", b"bytes:00ff"]
    # Not UTF-8: the client's fault, said as such, before user code runs.
    answer = pipeline.run([request(b"\xff[1]", "application/json")])[0]
    assert answer.status == 400
    assert json.loads(answer.body)["message"].startswith("the application/json body is not UTF-8")


# A failed request frees its memory at once, without the garbage collector.


@pytest.fixture
def no_gc():
    """The garbage collector off: what a failed request leaves must go by reference counting."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


KEEPS_WEAKREFS = """
import weakref
import torch

REFS = []

def input_fn(body, content_type):
    data = torch.zeros(1000, 3)  # 3 columns: does not fit the Scale model's cat([x * 2, rows])
    REFS.append(weakref.ref(data))
    if body == "bad input":
        raise ValueError("no")
    return data
"""


def _refs(pipeline: Pipeline) -> list:
    return pipeline.contract.input_fn.function.__globals__["REFS"]


def test_a_forward_pass_that_fails_frees_its_input_at_once(tmp_path, no_gc):
    pipeline = make_pipeline(tmp_path, KEEPS_WEAKREFS)

    def failing(x: torch.Tensor) -> torch.Tensor:
        intermediate = x * 2
        kept.append(weakref.ref(intermediate))
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1000x3 and 2x2)")

    kept: list = []
    pipeline.predictor.model = failing
    answers = pipeline.run([request(b"one"), request(b"two")])
    assert [answer.status for answer in answers] == [400, 400]
    refs = _refs(pipeline) + kept
    assert len(refs) == 5  # two inputs; the batched pass's and each input's intermediate
    assert [ref() for ref in refs] == [None] * 5


def test_a_model_bug_frees_the_input_and_keeps_its_traceback_for_the_log(tmp_path, no_gc, caplog):
    pipeline = make_pipeline(tmp_path, KEEPS_WEAKREFS)

    def buggy(x: torch.Tensor) -> torch.Tensor:
        intermediate = x + 1
        kept.append(weakref.ref(intermediate))
        return intermediate.no_such_method()  # a bug in the model: a 500

    kept: list = []
    pipeline.predictor.model = buggy
    answer = pipeline.run([request(b"one")])[0]
    assert answer.status == 500
    assert [ref() for ref in _refs(pipeline) + kept] == [None, None]
    assert "Traceback" in caplog.text  # the model's line, in the log
    assert "return intermediate.no_such_method()" in caplog.text


def test_a_failing_user_predict_fn_frees_its_input_at_once(tmp_path, no_gc):
    source = KEEPS_WEAKREFS + (
        "\ndef predict_fn(data, model):\n    scaled = data * 3\n    raise KeyError('bug')\n"
    )
    pipeline = make_pipeline(tmp_path, source)
    answers = pipeline.run([request(b"one"), request(b"bad input"), request(b"two")])
    assert [answer.status for answer in answers] == [500, 400, 500]
    assert [ref() for ref in _refs(pipeline)] == [None, None, None]


def test_an_answer_that_cannot_be_encoded_frees_the_prediction_at_once(tmp_path, no_gc):
    source = KEEPS_WEAKREFS + (
        "\ndef predict_fn(data, model):\n    return {'tensor': data, 'bad': object()}\n"
    )
    pipeline = make_pipeline(tmp_path, source)
    answer = pipeline.run([request(b"one")])[0]
    assert answer.status == 500  # the default output_fn cannot encode an object()
    assert [ref() for ref in _refs(pipeline)] == [None]


def test_a_body_too_large_to_decode_is_a_413_naming_the_setting(tmp_path):
    pipeline = make_pipeline(tmp_path, SERVING_MAX_DECODED_MB="1")
    image = io.BytesIO()
    Image.new("RGB", (512, 512)).save(image, format="PNG")  # 3 MiB as float32, a 2 KiB body
    body = image.getvalue()
    answers = pipeline.run([request(body, "image/png"), request(b"[[1, 2]]")])
    assert [answer.status for answer in answers] == [413, 200]
    message = json.loads(answers[0].body)["message"]
    assert "the 512x512 image decodes to 3145728 bytes" in message
    assert "1 MiB, SERVING_MAX_DECODED_MB" in message


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_body_nested_100000_deep_is_a_400_also_for_user_parsers(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        import json

        def input_fn(body, content_type):
            return json.loads(body)  # recursive: RecursionError
        """,
    )
    answer = pipeline.run([request(DEEP)])[0]
    assert answer.status == 400
    assert "nested 100000 levels deep" in json.loads(answer.body)["message"]
    default = make_pipeline(tmp_path)
    assert default.run([request(DEEP), request(DEEP, "application/jsonlines")])[0].status == 400


def test_a_recursion_bug_in_user_code_is_still_a_500(tmp_path):
    pipeline = make_pipeline(
        tmp_path,
        """
        def input_fn(body, content_type):
            return input_fn(body, content_type)
        """,
    )
    answer = pipeline.run([request(b"[[1, 2]]")])[0]
    assert answer.status == 500
    assert "RecursionError" in json.loads(answer.body)["message"]
