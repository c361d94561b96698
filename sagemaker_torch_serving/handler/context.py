"""The ``context`` argument user functions may take.

It offers what MMS's own context offers (``system_properties``, ``get_request_header``,
``set_response_header``, ...), scoped to one request, so code written for the official toolkit
keeps working, also when MMS hands the handler several requests at once: ``idx`` must be 0,
which means "this request". Custom attributes have their own accessors.
"""

from __future__ import annotations

from typing import Any

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class ServingContext:
    """One request's view (or, for model_fn, the worker's view) of the serving environment."""

    def __init__(
        self,
        system_properties: dict[str, Any],
        request_id: str | None = None,
        request_headers: dict[str, str] | None = None,
    ) -> None:
        self.system_properties = system_properties
        self.request_id = request_id
        self.request_headers = request_headers or {}  # names in lower case
        self.response_headers: dict[str, str] = {}
        self.response_content_type: str | None = None

    @property
    def custom_attributes(self) -> str | None:
        """The request's X-Amzn-SageMaker-Custom-Attributes header, if it has one."""
        return self.request_headers.get(CUSTOM_ATTRIBUTES.lower())

    def set_custom_attributes(self, value: str) -> None:
        """Answer with an X-Amzn-SageMaker-Custom-Attributes header."""
        self.response_headers[CUSTOM_ATTRIBUTES] = value

    # MMS's Context methods, for handler code written against the official toolkit.
    def get_request_header(self, idx: int, key: str) -> str | None:
        _check_index(idx)
        return self.request_headers.get(key.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        _check_index(idx)
        return dict(self.request_headers)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        _check_index(idx)
        self.response_headers[key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        _check_index(idx)
        self.response_content_type = value


def _check_index(idx: int) -> None:
    if idx != 0:
        raise IndexError("a context serves one request: use index 0")
