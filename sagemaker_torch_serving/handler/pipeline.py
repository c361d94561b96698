"""A batch of requests in, one answer each out: the user's functions where defined, else defaults.

Every request gets its own answer: its own status, Content-Type and headers. An error in one
request never fails the others, and never kills the worker. A 500 names the function that failed
(the user's, or the default's description) and the exception; its traceback goes to the log.

A request that fails frees its memory at once: an exception's traceback holds the frames it
passed through, with their local variables (the decoded tensors, the model's intermediates), and
an exception kept in a list by the frame that caught it is a reference cycle that only the
garbage collector breaks. ``release`` drops the tracebacks as soon as an error is caught to be
answered; the log gets their summary.

A caller that wants to know where the time goes (the predict command) passes ``StageTimes`` to
``run``; the worker passes none, and then no clock is read.

In batch transform (SAGEMAKER_BATCH) with the default input_fn, predict_fn and output_fn, a CSV
or JSON Lines body is read as records (``codecs.Records``): the good ones go through the model
as one tensor, and the answer has one line per record, in order, an error in place of a bad one
(``codecs.encode_records``). A model whose output is not one row per good record, or an Accept
without lines, gets the body answered as in real time: a bad record is then a 400.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from sagemaker_torch_serving.errors import (
    DEFAULT_SOURCES,
    BadRequest,
    InferenceError,
    PayloadTooLarge,
    Stage,
    error_body,
    status_for,
)
from sagemaker_torch_serving.handler import codecs, media
from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.contract import Contract
from sagemaker_torch_serving.handler.predict import Predictor, release, traceback_text
from sagemaker_torch_serving.settings import Env, Settings

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Request:
    request_id: str
    body: bytes
    content_type: str | None  # the header as sent
    accept: str | None  # the header as sent
    context: ServingContext


@dataclasses.dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


@dataclasses.dataclass
class StageTimes:
    """Seconds one ``Pipeline.run`` spent per stage, filled only when a caller passes one.

    ``input``, ``output`` and ``transform`` are per request, by its index in the batch (a request
    that failed earlier has no entry for the later stages); ``predict`` is the whole batch's (its
    ``predicted`` decoded inputs): one forward pass for the inputs that share a shape (the default
    predict_fn), or the user's ``predict_fn`` request after request.
    """

    input: dict[int, float] = dataclasses.field(default_factory=dict)
    predict: float | None = None
    predicted: int = 0
    output: dict[int, float] = dataclasses.field(default_factory=dict)
    transform: dict[int, float] = dataclasses.field(default_factory=dict)


class Pipeline:
    """The user's contract bound to a loaded model."""

    def __init__(
        self,
        settings: Settings,
        contract: Contract,
        model: Any,
        system_properties: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.contract = contract
        self.model = model
        self.system_properties = system_properties  # what context.system_properties shows
        # The default predict_fn puts the model in eval mode; a user's predict_fn decides itself.
        default_predict = contract.predict_fn is None and contract.transform_fn is None
        self.predictor = Predictor(model, eval_mode=default_predict)
        # Records answered one by one: batch transform, and every function a default.
        self.per_record = settings.batch_transform and not any(
            (contract.input_fn, contract.predict_fn, contract.output_fn, contract.transform_fn)
        )

    def answer(self, requests: list[Request], times: StageTimes | None = None) -> list[Answer]:
        """``run``, and should the pipeline itself fail (its errors are answered per request,
        so that is a bug in it), a 500 for each request, with the traceback in the log."""
        try:
            return self.run(requests, times)
        except Exception:
            logger.exception("the pipeline failed on a batch")
            message = "the server failed on this request; its log has the details"
            return [error_answer(request.request_id, 500, message) for request in requests]

    def run(self, requests: list[Request], times: StageTimes | None = None) -> list[Answer]:
        """One answer per request, in order; ``times``, if given, gets each stage's seconds."""
        if self.contract.transform_fn is not None:
            return [
                self._transform(request, index, times) for index, request in enumerate(requests)
            ]
        answers: dict[int, Answer] = {}
        decoded: dict[int, Any] = {}
        records: dict[int, codecs.Records] = {}
        started = 0.0
        for index, request in enumerate(requests):
            if times is not None:
                started = time.perf_counter()
            try:
                data = self._input(request)
                if isinstance(data, codecs.Records):
                    records[index] = data
                    data = data.tensor
                decoded[index] = data
            except Exception as error:  # noqa: BLE001 - answered per request
                answers[index] = self._error(request, error, "input")
            if times is not None:
                times.input[index] = time.perf_counter() - started
        indices = list(decoded)
        if times is not None:
            started = time.perf_counter()
        predictions = self._predict(requests, decoded)
        if times is not None and indices:
            times.predict = time.perf_counter() - started
            times.predicted = len(indices)
        decoded.clear()  # the inputs go as soon as the forward pass is done with them
        for index, prediction in zip(indices, predictions, strict=True):
            request = requests[index]
            if isinstance(prediction, Exception):
                answers[index] = self._error(request, prediction, "predict")
                continue
            if times is not None:
                started = time.perf_counter()
            try:
                answers[index] = self._output(request, prediction, records.get(index))
            except Exception as error:  # noqa: BLE001 - answered per request
                answers[index] = self._error(request, error, "output")
            if times is not None:
                times.output[index] = time.perf_counter() - started
        return [answers[index] for index in range(len(requests))]

    def warm_up(self) -> None:
        """Run zeros of SERVING_WARMUP_SHAPE through the model, so the first request is fast."""
        import torch

        shape = self.settings.warmup_shape
        if shape is None or self.contract.transform_fn is not None:
            return
        data = torch.zeros(shape)
        if self.contract.predict_fn is None:
            self.predictor.predict(data)
        else:
            context = ServingContext(self.system_properties)
            self.contract.predict_fn(data, self.model, context=context)

    def _input(self, request: Request) -> Any:
        if len(request.body) > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"the request body has {len(request.body)} bytes, over the "
                f"{self.settings.max_payload_bytes}-byte limit ({Env.MAX_PAYLOAD_IN_MB})"
            )
        content_type, params = media.parse_content_type(request.content_type)
        if self.contract.input_fn is not None:
            body = media.user_body(request.body, content_type)
            return self.contract.input_fn(body, content_type, context=request.context)
        return codecs.decode(
            request.body,
            content_type,
            params,
            self.settings.max_payload_bytes,
            self.settings.max_decoded_bytes,
            records=self.per_record,
        )

    def _predict(self, requests: list[Request], decoded: dict[int, Any]) -> list[Any]:
        if self.contract.predict_fn is None:
            return self.predictor.predict_batch(list(decoded.values()))
        results: list[Any] = []
        for index, data in decoded.items():
            try:
                context = requests[index].context
                results.append(self.contract.predict_fn(data, self.model, context=context))
            except Exception as error:  # noqa: BLE001 - answered per request
                results.append(release(error))
        return results

    def _output(
        self, request: Request, prediction: Any, records: codecs.Records | None = None
    ) -> Answer:
        if self.contract.output_fn is None:
            accept = media.negotiate(request.accept, codecs.ENCODABLE, self.settings.default_accept)
            if records is not None:
                body = self._encode_records(request, prediction, accept, records)
                if accept in (media.CSV, media.JSONLINES):
                    # AssembleWith=Line adds a newline after each answer: none of ours at its end
                    body = body.removesuffix(b"\n")
                return self._answer(request, body, accept)
            return self._answer(request, codecs.encode(prediction, accept), accept)
        accept = self._user_accept(request.accept)
        result = self.contract.output_fn(prediction, accept, context=request.context)
        return self._user_answer(request, result, accept, "output_fn")

    def _encode_records(
        self, request: Request, prediction: Any, accept: str, records: codecs.Records
    ) -> bytes:
        """One line per record, errors in place; else the answer as in real time: the whole
        output encoded, or a 400 for the first bad record."""
        body = codecs.encode_records(prediction, accept, records)
        if body is not None:
            if records.errors:
                first = records.errors[min(records.errors)]
                logger.info(
                    "request %s: %d of %d records answered with an error; the first: %s",
                    request.request_id,
                    len(records.errors),
                    records.count,
                    first,
                )
            return body
        if records.errors:
            raise records.error()
        return codecs.encode(prediction, accept)

    def _transform(self, request: Request, index: int, times: StageTimes | None) -> Answer:
        if times is None:
            return self._transform_one(request)
        started = time.perf_counter()
        answer = self._transform_one(request)
        times.transform[index] = time.perf_counter() - started
        return answer

    def _transform_one(self, request: Request) -> Answer:
        assert self.contract.transform_fn is not None
        content_type = media.parse_content_type(request.content_type)[0]
        accept = self._user_accept(request.accept)
        try:
            body = media.user_body(request.body, content_type)
            result = self.contract.transform_fn(
                self.model, body, content_type, accept, context=request.context
            )
            return self._user_answer(request, result, accept, "transform_fn")
        except Exception as error:  # noqa: BLE001 - answered per request
            return self._error(request, error, "transform")

    def _user_accept(self, accept: str | None) -> str:
        """What user code gets as ``accept``: the header, or the default for none or */*."""
        if not accept or accept.strip() in ("", "*/*"):
            return self.settings.default_accept
        return accept

    def _user_answer(self, request: Request, result: Any, accept: str, function: str) -> Answer:
        """User functions return a body, or (body, content_type) as in the official toolkits."""
        content_type = None
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
            result, content_type = result
        if result is None:
            # The accept it got says which branch fell through (if accept == ...: return ...).
            raise InferenceError(
                f"{function} returned None for accept={accept!r}; it must return the answer's "
                "body (bytes or str), or (body, content_type)"
            )
        if isinstance(result, str):
            result = result.encode()
        elif not isinstance(result, (bytes, bytearray)):
            result, content_type = codecs.encode(result, media.JSON), media.JSON
        if content_type is None:
            ranges = media.parse_accept(accept)
            content_type = ranges[0] if ranges and "*" not in ranges[0] else media.JSON
        return self._answer(request, bytes(result), content_type)

    def _answer(self, request: Request, body: bytes, content_type: str) -> Answer:
        context = request.context
        if len(body) > self.settings.max_payload_bytes:
            limit = self.settings.max_payload_bytes
            message = f"the answer has {len(body)} bytes, over the {limit}-byte limit"
            return error_answer(request.request_id, 500, message)
        headers = {"X-Request-Id": request.request_id, **context.response_headers}
        return Answer(200, body, context.response_content_type or content_type, headers)

    def _error(self, request: Request, error: BaseException, stage: Stage) -> Answer:
        release(error)
        if stage in ("input", "transform") and isinstance(error, RecursionError):
            depth = media.nesting_depth(request.body)
            if depth > media.DEEP_NESTING:  # the body's fault, not a bug in the code that read it
                message = f"the request body is nested {depth} levels deep, too deep to decode"
                error = BadRequest(message)
        status, message = status_for(error, stage, self._source(stage))
        if status >= 500:
            source = self._source(stage)
            trace = traceback_text(error)  # released: the summary of its traceback
            logger.error("request %s: %s failed\n%s", request.request_id, source, trace)
        else:
            logger.info("request %s: %d %s", request.request_id, status, message)
        return error_answer(request.request_id, status, message)

    def _source(self, stage: Stage) -> str:
        """What failed at ``stage``: the user's function there, or the default's description."""
        function = getattr(self.contract, f"{stage}_fn")
        return function.name if function is not None else DEFAULT_SOURCES[stage]


def error_answer(request_id: str, status: int, message: str) -> Answer:
    """The answer to a request that failed: the JSON error body, no traceback."""
    body = error_body(status, message, request_id)
    return Answer(status, body, media.JSON, {"X-Request-Id": request_id})
