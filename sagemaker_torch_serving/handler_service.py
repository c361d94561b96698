"""MMS's entry point in each worker process: ``handle(data, context)``.

MMS imports this module in the worker and calls ``handle(None, context)`` once to load the
model, then ``handle(batch, context)`` with up to SAGEMAKER_MODEL_SERVER_BATCH_SIZE requests.
Registered as ``module:function``, so MMS's rule that a handler module hold exactly one class
does not apply. When loading fails, the reason is written to the server's run directory,
where the supervising process (server.py) reads it and exits with it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from sagemaker_torch_serving.activity import ActivityMark
from sagemaker_torch_serving.context import ServingContext
from sagemaker_torch_serving.errors import first_line
from sagemaker_torch_serving.mms_config import RunPaths
from sagemaker_torch_serving.pipeline import Answer, Pipeline, Request
from sagemaker_torch_serving.settings import Settings

logger = logging.getLogger(__name__)
_pipeline: Pipeline | None = None
_activity: ActivityMark | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """MMS's handler: load on ``None``, else answer each request of the batch."""
    global _pipeline, _activity
    if data is None:
        _pipeline = _load(context)
        run_dir = _pipeline.settings.run_dir
        _activity = ActivityMark(RunPaths(run_dir).activity) if run_dir is not None else None
        return None
    assert _pipeline is not None, "MMS sent requests before loading the model"
    if _activity is not None:
        _activity.busy()
    try:
        requests = [_request(index, item, context) for index, item in enumerate(data)]
        answers = _pipeline.run(requests)
        for index, answer in enumerate(answers):
            _reply(context, index, answer)
        return [answer.body for answer in answers]
    finally:
        if _activity is not None:
            _activity.idle()


def _load(mms_context: Any) -> Pipeline:
    settings = Settings.from_env()
    logging.basicConfig(stream=sys.stdout, level=settings.log_level, format="%(message)s")
    if settings.log_level > logging.DEBUG:
        # MMS's worker logs "[METRICS]..." lines after every batch; the frontend drops them
        # unless DEBUG, so do not write them at all.
        logging.getLogger("mms.service").setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        pipeline = _build(settings, dict(mms_context.system_properties))
    except Exception as error:
        _report_failure(settings, error)
        raise
    logger.info(
        "worker %d loaded the model in %.2f s (%s)",
        os.getpid(),
        time.perf_counter() - started,
        pipeline.contract.describe(),
    )
    return pipeline


def _build(settings: Settings, system_properties: dict[str, Any]) -> Pipeline:
    import torch

    from sagemaker_torch_serving.contract import load_contract
    from sagemaker_torch_serving.model_loading import load_model, select_device

    torch.set_num_threads(settings.torch_threads)
    contract = load_contract(settings.program_path, required=settings.program is not None)
    device = select_device(settings.device, system_properties.get("gpu_id"))
    system_properties.update(model_dir=str(settings.model_dir), device=str(device))
    if contract.model_fn is not None:
        context = ServingContext(system_properties)
        model = contract.model_fn(str(settings.model_dir), context=context)
    else:
        model = load_model(
            settings.model_dir, device, settings.trust_pickled_model, settings.half_precision
        )
    pipeline = Pipeline(settings, contract, model, system_properties)
    pipeline.warm_up()
    return pipeline


def _report_failure(settings: Settings, error: BaseException) -> None:
    reason = f"{type(error).__name__}: {first_line(error)}"
    logger.error("loading the model failed: %s", reason)  # MMS logs the traceback
    if settings.run_dir is not None:
        RunPaths(settings.run_dir).load_failure.write_text(reason + "\n")


def _request(index: int, item: dict[str, Any], mms_context: Any) -> Request:
    raw_headers = mms_context.get_all_request_header(index)
    headers = {name.lower(): value for name, value in raw_headers.items() if isinstance(value, str)}
    body = item.get("body")
    if body is None:
        body = item.get("data", b"")
    if isinstance(body, str):
        body = body.encode()
    request_id = mms_context.get_request_id(index)
    system_properties = _pipeline.system_properties if _pipeline else {}
    return Request(
        request_id=request_id,
        body=bytes(body),
        content_type=headers.get("content-type"),
        accept=headers.get("accept"),
        context=ServingContext(system_properties, request_id, headers),
    )


def _reply(mms_context: Any, index: int, answer: Answer) -> None:
    mms_context.set_response_status(answer.status, "", idx=index)
    mms_context.set_response_content_type(index, answer.content_type)
    for name, value in answer.headers.items():
        mms_context.set_response_header(index, name, value)
