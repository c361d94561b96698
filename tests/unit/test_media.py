"""Unit tests for media types: Content-Type parsing and Accept negotiation."""

from __future__ import annotations

import time

import pytest

from sagemaker_torch_serving.errors import NotAcceptable
from sagemaker_torch_serving.handler import media
from sagemaker_torch_serving.handler.media import negotiate, parse_accept, parse_content_type

SUPPORTED = (media.JSON, media.JSONLINES, media.CSV, media.NPY, media.NPZ)


def test_parse_content_type_with_parameters() -> None:
    assert parse_content_type('application/json; charset="UTF-8"; foo=bar') == (
        "application/json",
        {"charset": "UTF-8", "foo": "bar"},
    )


def test_parse_content_type_lowercases_the_type_and_parameter_names() -> None:
    assert parse_content_type("Application/JSON; Charset=utf-16") == (
        "application/json",
        {"charset": "utf-16"},
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/jsonl", media.JSONLINES),
        ("application/x-jsonlines", media.JSONLINES),
        ("application/x-ndjson", media.JSONLINES),
        ("application/csv", media.CSV),
        ("image/jpg", media.JPEG),
        ("IMAGE/JPG; q=1", media.JPEG),
    ],
)
def test_parse_content_type_maps_aliases(header: str, expected: str) -> None:
    assert parse_content_type(header)[0] == expected


@pytest.mark.parametrize("header", [None, "", "   "])
def test_parse_content_type_empty_is_the_default(header: str | None) -> None:
    assert parse_content_type(header) == (media.JSON, {})
    assert parse_content_type(header, default=media.CSV) == (media.CSV, {})


def test_parse_accept_orders_by_quality_then_position() -> None:
    header = "text/csv;q=0.5, application/json, application/x-npy;q=0.9, application/jsonlines"
    assert parse_accept(header) == [
        media.JSON,
        media.JSONLINES,
        media.NPY,
        media.CSV,
    ]


def test_parse_accept_drops_q_zero() -> None:
    assert parse_accept("application/json;q=0, text/csv, application/x-npy;q=0.0") == [media.CSV]


@pytest.mark.parametrize("accept", [None, "", "  ", "*/*", "*/*;q=0.8"])
def test_negotiate_missing_or_wildcard_is_the_default(accept: str | None) -> None:
    assert negotiate(accept, SUPPORTED, media.JSON) == media.JSON


@pytest.mark.parametrize("accept", [None, "*/*"])
def test_negotiate_honours_a_non_json_default(accept: str | None) -> None:
    assert negotiate(accept, SUPPORTED, media.CSV) == media.CSV
    assert negotiate(accept, SUPPORTED, "application/x-npy; charset=binary") == media.NPY


def test_negotiate_picks_the_preferred_supported_type() -> None:
    assert negotiate("text/csv, application/json;q=0.5", SUPPORTED, media.JSON) == media.CSV
    assert negotiate("text/csv;q=0.1, application/json;q=0.5", SUPPORTED, media.JSON) == media.JSON


def test_negotiate_skips_unsupported_to_the_next_range() -> None:
    assert negotiate("image/png, application/x-npz;q=0.2", SUPPORTED, media.JSON) == media.NPZ


def test_negotiate_maps_aliases_in_accept() -> None:
    assert negotiate("application/jsonl", SUPPORTED, media.JSON) == media.JSONLINES


def test_negotiate_type_wildcard_prefers_the_default_when_it_matches() -> None:
    assert negotiate("application/*", SUPPORTED, media.NPY) == media.NPY
    assert negotiate("application/*", SUPPORTED, media.JSON) == media.JSON


def test_negotiate_type_wildcard_falls_back_to_the_first_matching_supported() -> None:
    assert negotiate("application/*", SUPPORTED, media.CSV) == media.JSON
    assert negotiate("text/*", SUPPORTED, media.JSON) == media.CSV


def test_negotiate_default_not_supported_falls_back_to_the_first_supported() -> None:
    assert negotiate("*/*", (media.CSV, media.JSON), "image/png") == media.CSV


@pytest.mark.parametrize("accept", ["image/png", "image/*", "application/json;q=0"])
def test_negotiate_unsupported_raises_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate(accept, SUPPORTED, media.JSON)
    assert caught.value.status_code == 406
    message = str(caught.value)
    for supported in SUPPORTED:
        assert supported in message


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"1,2\n3,4\n", 0),
        (b"[[1, 2], [3, 4]]", 2),
        (b'{"instances": [[1]]}', 3),
        (b'{"a": [{"b": (1)}]}', 4),
        (b"]]][", 0),
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
    ],
)
def test_nesting_depth(body: bytes, depth: int) -> None:
    assert media.nesting_depth(body) == depth


def test_nesting_depth_of_a_payload_sized_body_is_cheap() -> None:
    body = b"[1.5, 2.5, 3.5]," * (6 * 1024 * 1024 // 16)
    began = time.perf_counter()
    assert media.nesting_depth(b"[" + body + b"]") == 2
    assert time.perf_counter() - began < 1.0
