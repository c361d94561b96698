"""The serving port against hostile and broken clients (java/FrontDoor.java): only the
contract answers, every error a client can cause is a 4xx with our JSON body, pipelined
requests keep their order, slow clients are cut off, and a fuzz run of malformed requests
gets no 5xx."""

from __future__ import annotations

import http.client
import io
import json
import random
import socket
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.conftest import ServerProcess


class Answer:
    def __init__(self, response: http.client.HTTPResponse, method: str) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.body = response.read()
        self.method = method

    def json(self) -> dict:
        return json.loads(self.body)


class _Unclosed:
    """A stream that an HTTPResponse, which closes what it read from, leaves open."""

    def __init__(self, stream: io.BufferedReader) -> None:
        self.stream = stream

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)

    def close(self) -> None:
        pass


def exchange(port: int, data: bytes, method: str = "GET", answers: int = 1) -> list[Answer]:
    """Send raw bytes; read up to ``answers`` HTTP answers (fewer if the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out: list[Answer] = []
        stream = _Unclosed(sock.makefile("rb"))  # one reader for answers that arrive together
        for _ in range(answers):
            response = http.client.HTTPResponse(sock, method=method)
            response.fp = stream  # type: ignore[assignment]
            try:
                response.begin()
            except (http.client.RemoteDisconnected, ConnectionResetError):
                break
            out.append(Answer(response, method))
        return out


def request(method: str, target: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_ours(answer: Answer, status: int | None = None) -> dict | None:
    """Our error: 4xx, JSON with code, message and the request id of its X-Request-Id."""
    if status is not None:
        assert answer.status == status, answer.body
    assert 400 <= answer.status < 500, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json")
    request_id = answer.headers["x-request-id"]
    if answer.method == "HEAD":
        assert answer.body == b""  # HTTP: an answer to HEAD has no body
        return None
    body = answer.json()
    assert body["code"] == answer.status
    assert body["message"] and "Exception" not in body["message"]
    assert body["request_id"] == request_id
    return body


@pytest.fixture
def server(start_server, scale_model) -> ServerProcess:
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1",
        SERVING_REQUEST_READ_SECONDS="2",
    )
    server.wait_ready()
    return server


@pytest.mark.parametrize(
    ("method", "target", "status", "allow"),
    [
        ("POST", "/ping", 405, "GET"),
        ("PUT", "/ping", 405, "GET"),
        ("DELETE", "/ping", 405, "GET"),
        ("HEAD", "/ping", 405, "GET"),
        ("get", "/ping", 405, "GET"),
        ("GET", "/invocations", 405, "POST"),
        ("POST", "/execution-parameters", 405, "GET"),
        ("PUT", "/invocations", 405, "POST"),
        ("PATCH", "/invocations", 405, "POST"),
        ("POST", "/predictions/model", 404, None),
        ("POST", "/models/model/invoke", 404, None),
        ("GET", "/api-description", 404, None),
        ("OPTIONS", "/", 404, None),
        ("OPTIONS", "*", 404, None),
        ("GET", "/models", 404, None),
        ("GET", "/ping/", 404, None),
        ("GET", "http://127.0.0.1/ping", 404, None),
    ],
)
def test_only_get_ping_and_post_invocations_answer_on_the_serving_port(
    server, method, target, status, allow
):
    (answer,) = exchange(server.port, request(method, target, b"[[1]]"), method)
    assert_ours(answer, status)
    assert answer.headers.get("allow") == allow


def test_batch_transform_asks_for_its_execution_parameters(start_server, scale_model):
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="5",
    )
    server.wait_ready()
    answer = requests.get(f"{server.url}/execution-parameters", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {
        "MaxConcurrentTransforms": 2,  # one request per worker
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 5,
    }


def test_malformed_http_and_refused_bodies_get_our_4xx(server):
    cases = {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": 400,
        b"\x00\x01\x02 garbage\r\n\r\n": 400,
        b"GET /ping HTTP/1.1\r\nBad Header\r\n\r\n": 400,
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n": 414,
        b"GET /ping HTTP/1.1\r\n" + b"X-Pad: " + b"v" * 9000 + b"\r\n\r\n": 431,
        request("POST", "/invocations", b"[1]", Content_Type="application/json", Expect="x"): 417,
        b"POST /invocations HTTP/1.1\r\nContent-Length: abc\r\n\r\n[1]": 400,
        b"POST /invocations HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n[1]": 400,
        # CVE-2025-58056 needs a chunked body: none reaches Netty's chunk parser's consumer
        b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x\n[1]\r\n0\r\n\r\n": (
            411
        ),
        b"POST /invocations HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n": (
            411
        ),
    }
    for data, status in cases.items():
        (answer,) = exchange(server.port, data)
        assert_ours(answer, status)
    assert server.ping() == 200


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 4 * 1024 * 1024 + 1, 64 * 1024 * 1024])
def test_a_body_over_the_limit_is_our_413_at_any_size(server, size):
    # The body is sent in full: the client must still read the answer (lingering close).
    response = requests.post(
        f"{server.url}/invocations",
        data=b"1" * size,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    body = response.json()
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in body["message"]


def test_pipelined_requests_are_answered_in_order_each_with_its_own_id(server):
    good = request("POST", "/invocations", b"[[1]]", Content_Type="application/json")
    bad = request("POST", "/invocations", b"[[1", Content_Type="application/json")
    npy = request("POST", "/invocations", b"\x93NUMPYgarbage", Content_Type="application/x-npy")
    ping = request("GET", "/ping")
    last = request(
        "POST", "/invocations", b"[[3]]", Content_Type="application/json", Connection="close"
    )
    answers = exchange(server.port, good + bad + ping + npy + good + last, "POST", answers=7)
    assert [answer.status for answer in answers] == [200, 400, 200, 400, 200, 200]
    assert answers[0].json() == answers[4].json() == [[2.0, 1.0]]
    assert answers[5].json() == [[6.0, 1.0]]
    for answer in (answers[1], answers[3]):
        assert_ours(answer)
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert len(set(ids)) == len(ids)
    assert answers[5].headers["connection"] == "close"


def test_a_client_error_keeps_the_connection_for_the_next_request(server):
    with requests.Session() as session:
        url = f"{server.url}/invocations"
        headers = {"Content-Type": "application/json"}
        first = session.post(url, data=b"[[1", headers=headers, timeout=10)
        second = session.post(url, data=b"[[1]]", headers=headers, timeout=10)
    assert first.status_code == 400 and first.headers["Connection"] == "keep-alive"
    assert second.status_code == 200


def test_slow_clients_are_cut_off_and_the_service_goes_on(server):
    """Slowloris: a header byte now and then. SERVING_REQUEST_READ_SECONDS=2 here."""
    sockets = []
    for _ in range(60):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    started = time.monotonic()
    try:
        for _ in range(3):
            assert server.ping() == 200  # the service goes on meanwhile
            for sock in sockets:
                try:
                    sock.sendall(b"X-a: b\r\n")
                except OSError:
                    pass
            time.sleep(0.5)
        closed = 0
        for sock in sockets:
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except OSError:
                pass
            assert b" 408 " in data.split(b"\r\n")[0], data[:200]
            assert b"SERVING_REQUEST_READ_SECONDS" in data
            closed += 1
        assert closed == 60
        assert time.monotonic() - started < 6
    finally:
        for sock in sockets:
            sock.close()


def _npy_header(header: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _bodies(rng: random.Random) -> list[tuple[str, bytes]]:
    """Malformed bodies for every content type the default handlers decode."""
    huge_shape = _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999, 99999), }")
    png_bomb = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xff\x00\x00\xff\xff\x08\x02\x00\x00\x00"
    )
    return [
        ("application/json", b"[[1"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000),
        ("application/json", b'{"a": ' * 50_000 + b"1" + b"}" * 50_000),
        ("application/json", b"\xff\xfe\x00garbage"),
        ("application/json", b'["a", "b"]'),
        ("application/json", b"NaN"),
        ("application/jsonlines", b"[1]\n[[\n"),
        ("text/csv", b"1,2\n3"),
        ("text/csv", b"a,b\nc,d"),
        ("text/csv", b"\x00\x01"),
        ("application/x-npy", b"\x93NUMPY\x01\x00\xff\xff{"),
        ("application/x-npy", _npy_header(b"not a dict")),
        (
            "application/x-npy",
            _npy_header(b"{'descr': 'O', 'fortran_order': False, 'shape': (1,)}"),
        ),
        ("application/x-npy", huge_shape),
        ("application/x-npy", b"\x93NUMPY"),
        ("application/x-npz", b"PK\x03\x04garbage"),
        ("application/x-npz", _npz({"a.npy": huge_shape})),
        ("application/x-npz", _npz({"a.npy": b"junk"})),
        ("image/png", png_bomb),
        ("image/png", b"\x89PNG\r\n\x1a\ngarbage"),
        ("image/jpeg", b"\xff\xd8\xff\xe0garbage"),
        ("application/x-image", bytes(rng.randrange(256) for _ in range(64))),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data\r\n\r\n1\r\n--x--",
        ),
        ("multipart/form-data; boundary=", b"--\r\n\r\n"),
        ("application/x-www-form-urlencoded", b"a=%zz&&=="),
        ("application/unknown", b"[1]"),
        ("text/plain; charset=bogus", b"1"),
        ("", b"[[1]]"),
        ("application/json; charset=utf-16", b"\x00[\x001"),
    ]


def _oddities(rng: random.Random, content_type: str, body: bytes) -> tuple[bytes, int]:
    """The same request with one HTTP oddity, and how many answers it should get."""
    head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
    length = f"Content-Length: {len(body)}\r\n\r\n"
    choice = rng.randrange(12)
    if choice == 0:  # bare LF line ends
        return (head.replace("\r\n", "\n") + length.replace("\r\n", "\n")).encode() + body, 1
    if choice == 1:  # a Content-Length shorter than the body: the rest is a bogus request
        half = len(body) // 2
        rest = body[:half] + b"X" + body[half:] + b"\r\n\r\n"
        return (head + f"Content-Length: {half}\r\n\r\n").encode() + rest, 2
    if choice == 2:  # chunked with a bare-LF chunk extension (CVE-2025-58056's shape)
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"1;a\nx\r\n0\r\n\r\n", 1
    if choice == 3:  # odd Accept
        accept = rng.choice(["*/*;q=x", "x/y", ";;;", "a" * 300])
        return (head + f"Accept: {accept}\r\n" + length).encode() + body, 1
    if choice == 4:  # a header without a value, and a tab
        return (head + "X-Empty:\r\nX-Tab:\tv\r\n" + length).encode() + body, 1
    if choice == 5:  # negative length
        return (head + "Content-Length: -1\r\n\r\n").encode() + body, 1
    if choice == 6:  # a random method and path
        method = rng.choice(["GET", "PUT", "DELETE", "TRACE", "CONNECT", "FOO", "post"])
        path = rng.choice(["/invocations", "/ping", "/", "/predictions/model", "/../etc/passwd"])
        return request(method, path, body, Content_Type=content_type), 1
    if choice == 7:  # obsolete line folding
        return (head + "X-Fold: a\r\n b\r\n" + length).encode() + body, 1
    if choice == 8:  # the custom-attributes header, long
        value = "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(1024))
        return (
            head + f"X-Amzn-SageMaker-Custom-Attributes: {value}\r\n" + length
        ).encode() + body, 1
    if choice == 9:  # HTTP/1.0 and absurd versions
        version = rng.choice(["HTTP/1.0", "HTTP/9.9", "HTTP/1.1.1", "HTTX/1.1"])
        return (head.replace("HTTP/1.1", version, 1) + length).encode() + body, 1
    if choice == 10:  # NUL and control bytes in a header value
        return head.encode() + b"X-Bad: a\x00b\x7f\r\n" + length.encode() + body, 1
    return (head + length).encode() + body, 1


def test_fuzz_a_thousand_malformed_requests_get_no_5xx_and_only_our_errors(server):
    rng = random.Random(20261202)
    bodies = _bodies(rng)
    cases = []
    for _ in range(1100):
        content_type, body = rng.choice(bodies)
        if rng.random() < 0.3 and body:  # truncate, or flip bytes
            body = (
                body[: rng.randrange(len(body))]
                if rng.random() < 0.5
                else bytes(b ^ (0xFF if rng.random() < 0.05 else 0) for b in body[:5000])
            )
        cases.append(_oddities(rng, content_type, body))

    def run(case: tuple[bytes, int]) -> list[Answer]:
        return exchange(server.port, case[0], "POST", answers=case[1])

    statuses: dict[int, int] = {}
    with ThreadPoolExecutor(4) as pool:
        for (data, _), answers in zip(cases, pool.map(run, cases), strict=True):
            assert answers, f"no answer to {data[:200]!r}"
            for answer in answers:
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
                assert answer.status < 500, (data[:300], answer.status, answer.body[:300])
                if answer.status >= 400:
                    assert_ours(answer)
    assert sum(statuses.values()) >= 1000
    assert server.ping() == 200
    valid = requests.post(
        f"{server.url}/invocations", data=b"[[2]]", headers={"Content-Type": "application/json"}
    )
    assert valid.json() == [[4.0, 1.0]]
    assert "Traceback" not in server.log()
