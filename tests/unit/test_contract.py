"""Unit tests for loading the user's handler module and checking its functions' signatures."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagemaker_torch_serving.handler.contract import (
    Contract,
    ContractError,
    UserFunction,
    load_contract,
)


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    """load_contract edits sys.path and sys.modules; undo that after each test."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def _handler(folder: Path, source: str, name: str = "inference.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_missing_module_not_required_is_every_default(tmp_path: Path) -> None:
    contract = load_contract(tmp_path / "inference.py", required=False)
    assert contract == Contract()
    for name in ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn"):
        assert getattr(contract, name) is None
    assert contract.module_path is None


def test_missing_module_required_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "serve.py"
    with pytest.raises(ContractError, match=r"serve\.py") as caught:
        load_contract(path, required=True)
    assert str(path) in str(caught.value)


def test_module_with_only_input_fn(tmp_path: Path) -> None:
    path = _handler(
        tmp_path,
        """
        def input_fn(request_body, request_content_type):
            return ("decoded", request_body, request_content_type)
        """,
    )
    contract = load_contract(path, required=True)
    assert contract.module_path == path
    assert contract.input_fn is not None
    assert contract.input_fn.name == "input_fn"
    assert contract.input_fn.takes_context is False
    assert contract.input_fn(b"x", "text/csv", context=object()) == ("decoded", b"x", "text/csv")
    assert contract.model_fn is None
    assert contract.predict_fn is None
    assert contract.output_fn is None
    assert contract.transform_fn is None
    assert "input_fn" in contract.describe()


def test_non_callable_names_are_ignored(tmp_path: Path) -> None:
    path = _handler(tmp_path, "predict_fn = 3\n")
    assert load_contract(path, required=True).predict_fn is None


@pytest.mark.parametrize(
    ("name", "signature", "takes_context"),
    [
        ("input_fn", "(body, content_type, context)", True),
        ("input_fn", "(body, content_type)", False),
        ("model_fn", "(model_dir, context=None)", True),
        ("model_fn", "(model_dir)", False),
        ("predict_fn", "(*args)", True),
        ("output_fn", "(prediction, *rest)", True),
        ("output_fn", "(prediction, accept, **kwargs)", False),
        ("transform_fn", "(model, body, content_type, accept, context)", True),
        ("transform_fn", "(model, body, content_type, accept)", False),
    ],
)
def test_takes_context_follows_the_signature(
    tmp_path: Path, name: str, signature: str, takes_context: bool
) -> None:
    path = _handler(tmp_path, f"def {name}{signature}:\n    return None\n")
    function = getattr(load_contract(path, required=True), name)
    assert function is not None
    assert function.takes_context is takes_context


def test_user_function_passes_context_only_when_it_takes_it() -> None:
    context = object()

    def with_context(a: object, b: object, context: object) -> tuple[object, ...]:
        return (a, b, context)

    def without(a: object, b: object) -> tuple[object, ...]:
        return (a, b)

    assert UserFunction("f", with_context, takes_context=True)(1, 2, context=context) == (
        1,
        2,
        context,
    )
    assert UserFunction("f", without, takes_context=False)(1, 2, context=context) == (1, 2)


def test_loaded_functions_get_context_as_they_ask(tmp_path: Path) -> None:
    path = _handler(
        tmp_path,
        """
        def model_fn(model_dir, context=None):
            return ("model", model_dir, context)

        def predict_fn(*args):
            return args
        """,
    )
    contract = load_contract(path, required=False)
    assert contract.model_fn is not None and contract.predict_fn is not None
    assert contract.model_fn("/m", context="ctx") == ("model", "/m", "ctx")
    assert contract.predict_fn("data", "model", context="ctx") == ("data", "model", "ctx")


def test_transform_fn_with_input_fn_is_refused(tmp_path: Path) -> None:
    path = _handler(
        tmp_path,
        """
        def input_fn(body, content_type):
            return body

        def transform_fn(model, body, content_type, accept):
            return body
        """,
    )
    with pytest.raises(ContractError) as caught:
        load_contract(path, required=False)
    assert "transform_fn" in str(caught.value)
    assert "input_fn" in str(caught.value)


def test_transform_fn_alone_is_fine(tmp_path: Path) -> None:
    path = _handler(tmp_path, "def transform_fn(model, body, content_type, accept):\n    pass\n")
    contract = load_contract(path, required=False)
    assert contract.transform_fn is not None
    assert contract.input_fn is contract.predict_fn is contract.output_fn is None


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("predict_fn", "(data)"),
        ("model_fn", "()"),
        ("input_fn", "(body, content_type, context, extra)"),
        ("output_fn", "(prediction, accept, context, extra=None)"),
    ],
)
def test_wrong_argument_count_is_refused(tmp_path: Path, name: str, signature: str) -> None:
    path = _handler(tmp_path, f"def {name}{signature}:\n    return None\n")
    with pytest.raises(ContractError, match=name):
        load_contract(path, required=False)


def test_import_failure_carries_the_exception_message(tmp_path: Path) -> None:
    path = _handler(tmp_path, "raise RuntimeError('the tokenizer is missing')\n")
    with pytest.raises(ContractError, match="the tokenizer is missing") as caught:
        load_contract(path, required=False)
    assert "RuntimeError" in str(caught.value)
    assert str(path) in str(caught.value)


def test_syntax_error_is_a_contract_error(tmp_path: Path) -> None:
    path = _handler(tmp_path, "def model_fn(model_dir)\n    pass\n")
    with pytest.raises(ContractError, match="SyntaxError"):
        load_contract(path, required=False)


def test_module_imports_a_sibling_from_its_folder(tmp_path: Path) -> None:
    sibling = f"helpers_{uuid.uuid4().hex}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{sibling}.py").write_text("SCALE = 3\n")
    path = _handler(
        tmp_path / "code",
        f"""
        import {sibling}

        def predict_fn(data, model):
            return data * {sibling}.SCALE
        """,
    )
    contract = load_contract(path, required=True)
    assert contract.predict_fn is not None
    assert contract.predict_fn(2, None, context=None) == 6


def test_keyword_only_context_is_passed_or_refused_at_load(tmp_path: Path) -> None:
    path = _handler(tmp_path, "def input_fn(body, content_type, *, context):\n    return context\n")
    try:
        contract = load_contract(path, required=False)
    except ContractError:
        return  # refusing it at load is fine too
    assert contract.input_fn is not None
    assert contract.input_fn(b"x", "text/csv", context="ctx") == "ctx"


def test_pre_model_fn_and_model_warmup_fn_are_read_as_the_toolkit_reads_them(
    tmp_path: Path,
) -> None:
    path = _handler(
        tmp_path,
        """
        def pre_model_fn(model_dir):
            return ("pre", model_dir)

        def model_warmup_fn(model_dir, model, context):
            return ("warm", model_dir, model, context)
        """,
    )
    contract = load_contract(path, required=True)
    assert contract.pre_model_fn is not None and contract.model_warmup_fn is not None
    assert contract.pre_model_fn("/m", context="ctx") == ("pre", "/m")
    assert contract.model_warmup_fn("/m", "model", context="ctx") == ("warm", "/m", "model", "ctx")


TOOLKIT_HANDLER = """
    from sagemaker_inference.default_inference_handler import DefaultInferenceHandler

    class Handler(DefaultInferenceHandler):
        def default_model_fn(self, model_dir, context=None):
            return ("class model", model_dir, context)

        def default_input_fn(self, input_data, content_type, context=None):
            return ("class input", input_data, context)

    class NotAHandler:
        def default_model_fn(self, model_dir):
            return None

    class Fussy(DefaultInferenceHandler):
        def __init__(self):
            raise RuntimeError("no GPU for this one")

    class TooFew(DefaultInferenceHandler):
        def default_predict_fn(self, data):
            return data
"""


def _toolkit_handler(folder: Path) -> str:
    module = f"handlers_{uuid.uuid4().hex}"
    _handler(folder, TOOLKIT_HANDLER, f"{module}.py")
    return module


def test_a_handler_class_fills_what_inference_py_leaves_out(tmp_path: Path) -> None:
    module = _toolkit_handler(tmp_path)
    path = _handler(tmp_path, "def model_fn(model_dir):\n    return 'module model'\n")
    contract = load_contract(path, required=False, handler_class=f"{module}:Handler")
    assert contract.model_fn is not None and contract.model_fn.name == "model_fn"  # the module's
    assert contract.model_fn("/m", context="ctx") == "module model"
    assert contract.input_fn is not None
    assert contract.input_fn.name == "Handler.default_input_fn"
    assert contract.input_fn("[1]", "application/json", context="ctx") == (
        "class input",
        "[1]",
        "ctx",
    )
    # The base class's predict_fn raises NotImplementedError: the default applies instead.
    assert contract.predict_fn is None
    assert contract.output_fn is not None
    assert contract.output_fn.name == "Handler.default_output_fn"
    assert contract.output_fn([1, 2], "application/json", context="ctx") == (
        "[1, 2]",
        "application/json",
    )
    assert f"{module}:Handler" in contract.describe()
    assert "Handler.default_input_fn" in contract.describe()


def test_a_handler_class_alone_and_without_inference_py(tmp_path: Path) -> None:
    module = _toolkit_handler(tmp_path)
    contract = load_contract(
        tmp_path / "inference.py", required=False, handler_class=f"{module}:Handler"
    )
    assert contract.module_path is None
    assert contract.model_fn is not None
    assert contract.model_fn("/m", context="ctx") == ("class model", "/m", "ctx")


def test_transform_fn_in_inference_py_replaces_the_classs_input_predict_and_output(
    tmp_path: Path,
) -> None:
    module = _toolkit_handler(tmp_path)
    path = _handler(tmp_path, "def transform_fn(model, body, content_type, accept):\n    pass\n")
    contract = load_contract(path, required=False, handler_class=f"{module}:Handler")
    assert contract.transform_fn is not None
    assert contract.input_fn is contract.predict_fn is contract.output_fn is None
    assert contract.model_fn is not None and contract.model_fn.name == "Handler.default_model_fn"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{module}", "must be module:Class"),
        ("nowhere_{module}:Handler", "there is no module nowhere_{module} in {folder}"),
        ("{module}:Missing", "has no Missing"),
        ("{module}:NotAHandler", "NotAHandler is not a subclass of sagemaker_inference"),
        ("{module}:Fussy", "Fussy() failed: RuntimeError: no GPU for this one"),
        ("{module}:TooFew", "TooFew.default_predict_fn must take (input_data, model)"),
    ],
)
def test_a_bad_handler_class_is_one_clear_line(tmp_path: Path, value: str, expected: str) -> None:
    module = _toolkit_handler(tmp_path)
    value = value.format(module=module)
    with pytest.raises(ContractError) as caught:
        load_contract(tmp_path / "inference.py", required=False, handler_class=value)
    message = str(caught.value)
    assert expected.format(module=module, folder=tmp_path) in message
    assert "\n" not in message
    if "TooFew" not in value:
        assert message.startswith(f"SERVING_HANDLER_CLASS={value}")


def test_a_handler_module_that_fails_to_import_says_why(tmp_path: Path) -> None:
    module = f"handlers_{uuid.uuid4().hex}"
    _handler(tmp_path, "import not_installed_anywhere\n", f"{module}.py")
    with pytest.raises(ContractError) as caught:
        load_contract(tmp_path / "inference.py", required=False, handler_class=f"{module}:H")
    assert f"importing {module} failed" in str(caught.value)
    assert "not_installed_anywhere" in str(caught.value)
