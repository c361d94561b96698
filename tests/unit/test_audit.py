"""scripts/audit.py: the inventory (this environment's packages, the libraries inside MMS's jar)
and the OSV audit, against a fake OSV on 127.0.0.1 or a closed port there: no other traffic."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, load_script
from tests.ports import free_port

AUDIT_SCRIPT = REPO / "scripts" / "audit.py"
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}

audit = load_script("audit")


def mms_jar() -> Path:
    spec = importlib.util.find_spec("mms")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "frontend" / "model-server.jar"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name lookup or connection in this process other than to 127.0.0.1 fails the test."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host in LOOPBACK, f"a name lookup of {host!r}: tests stay on 127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            assert address[0] in LOOPBACK, f"a connection to {address!r}: tests stay local"
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in list(os.environ):
        if name.lower() in PROXY_VARS:
            monkeypatch.delenv(name)


# The inventory.


def test_the_jar_inventory_finds_netty_commons_io_and_the_rest_with_versions() -> None:
    packages, problems = audit.jar_inventory(mms_jar())
    assert problems == []
    found = {package.name: package.version for package in packages}
    assert found["io.netty:netty-codec-http"] == "4.1.91.Final"
    assert found["io.netty:netty-all"] == "4.1.91.Final"
    assert {name for name in found if name.startswith("io.netty:")} >= {
        "io.netty:netty-buffer",
        "io.netty:netty-codec",
        "io.netty:netty-common",
        "io.netty:netty-handler",
        "io.netty:netty-transport",
    }
    assert {name: version for name, version in found.items() if "netty" not in name} == {
        "commons-io:commons-io": "2.6",
        "commons-cli:commons-cli": "1.3.1",
        "com.google.code.gson:gson": "2.8.9",
        "com.lmax:disruptor": "3.4.4",
        "org.apache.logging.log4j:log4j-api": "2.17.1",
        "org.apache.logging.log4j:log4j-core": "2.17.1",
        "org.apache.logging.log4j:log4j-slf4j-impl": "2.17.1",
        "org.slf4j:slf4j-api": "1.7.32",
        "software.amazon.ai:mms-plugins-sdk": "1.0.1",
    }
    assert all(package.ecosystem == "Maven" for package in packages)
    assert "commons-io:commons-io:2.6" in {str(package) for package in packages}


def test_the_python_inventory_lists_the_environment_and_finds_its_jar() -> None:
    packages, local, jar = audit.python_inventory(Path(sys.executable))
    found = {package.name: package.version for package in packages}
    assert found["multi-model-server"] == "1.1.11"
    assert "torch" in found and "numpy" in found
    assert all(package.ecosystem == "PyPI" for package in packages)
    assert local == ["sagemaker-torch-serving"]  # this project: installed from its folder
    assert jar == mms_jar()


def _jar(path: Path, classes: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in classes.items():
            archive.writestr(name, data)
    return path


def test_a_class_of_no_known_library_leaves_the_jar_not_audited(tmp_path: Path) -> None:
    with zipfile.ZipFile(mms_jar()) as real:
        gson = real.read("com/google/gson/Gson.class")
    jar = _jar(
        tmp_path / "model-server.jar",
        {"com/google/gson/Gson.class": gson, "com/example/hidden/Thing.class": b"\xca\xfe"},
    )
    packages, problems = audit.jar_inventory(jar)
    assert [str(package) for package in packages] == ["com.google.code.gson:gson:2.8.9"]
    assert len(problems) == 1 and "com/example/hidden/" in problems[0]


def test_a_library_of_an_unknown_version_leaves_the_jar_not_audited(tmp_path: Path) -> None:
    changed = b"\xca\xfe\xba\xbe another commons-io"
    jar = _jar(tmp_path / "model-server.jar", {"org/apache/commons/io/IOUtils.class": changed})
    packages, problems = audit.jar_inventory(jar)
    assert packages == []
    assert problems == [
        f"the version of commons-io:commons-io in {jar} is unknown "
        f"(org/apache/commons/io/IOUtils.class has sha256 {hashlib.sha256(changed).hexdigest()})"
        ": identify it and add it to JAR_FINGERPRINTS (scripts/audit.py)"
    ]


# The audit, against OSV on 127.0.0.1.


Answer = Callable[[str, dict[str, Any] | None], tuple[int, bytes]]


@pytest.fixture
def fake_osv() -> Iterator[Callable[[Answer], str]]:
    """Start a fake OSV API on 127.0.0.1 answering with the function given; its URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, body: dict[str, Any] | None) -> None:
                status, data = answer(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                self._reply(json.loads(self.rfile.read(length)))

            def do_GET(self) -> None:
                self._reply(None)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


KNOWN = {  # (ecosystem, name, version): the ids OSV knows
    ("Maven", "io.netty:netty-codec-http", "4.1.91.Final"): ["GHSA-fghv-69vj-qj49"],
    ("Maven", "io.netty:netty-codec-http2", "4.1.91.Final"): ["GHSA-xpw8-rcwv-8f8p"],
}
DETAILS = {
    "GHSA-fghv-69vj-qj49": {
        "id": "GHSA-fghv-69vj-qj49",
        "aliases": ["CVE-2099-0001"],  # invented: a vulnerability nobody has accepted
        "summary": "an invented flaw in the HTTP codec",
    },
    "GHSA-xpw8-rcwv-8f8p": {
        "id": "GHSA-xpw8-rcwv-8f8p",
        "aliases": ["CVE-2023-44487"],
        "summary": "HTTP/2 rapid reset",
    },
}


def osv_knowing(known: dict[tuple[str, str, str], list[str]]) -> Answer:
    def answer(path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        if path == "/v1/querybatch" and body is not None:
            results = []
            for query in body["queries"]:
                key = (query["package"]["ecosystem"], query["package"]["name"], query["version"])
                ids = known.get(key, [])
                results.append(
                    {"vulns": [{"id": i, "modified": "2025"} for i in ids]} if ids else {}
                )
            return 200, json.dumps({"results": results}).encode()
        vuln_id = path.removeprefix("/v1/vulns/")
        if vuln_id in DETAILS:
            return 200, json.dumps(DETAILS[vuln_id]).encode()
        return 404, b'{"code": 5, "message": "Bug not found."}'

    return answer


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = audit.main(["--python", sys.executable, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_found_vulnerabilities_are_listed_and_exit_1(
    fake_osv: Callable[[Answer], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = fake_osv(osv_knowing(KNOWN))
    code, out, err = run_main(capsys, "--osv-url", url)
    assert code == 1, err
    assert (
        "  io.netty:netty-codec-http:4.1.91.Final: GHSA-fghv-69vj-qj49 (CVE-2099-0001) "
        "an invented flaw in the HTTP codec\n"
    ) in out
    # CVE-2023-44487 (HTTP/2) is accepted in the script, with its reason; CVE-2099-0001 is not.
    assert "GHSA-xpw8-rcwv-8f8p (CVE-2023-44487) HTTP/2 rapid reset\n      accepted: " in out
    assert out.splitlines()[-1] == (
        f"audit: {_package_count(out)} packages checked: 2 known vulnerabilities, "
        "1 of them not accepted"
    )
    assert "no known vulnerabilities" not in out + err
    assert err == ""


def _package_count(out: str) -> int:
    python = int(out.split("Python packages of ", 1)[1].split(": ", 1)[1].splitlines()[0])
    java = int(out.split("Java libraries in ", 1)[1].split(": ", 1)[1].splitlines()[0])
    return python + java


def test_accepted_vulnerabilities_only_exit_0(
    fake_osv: Callable[[Answer], str], capsys: pytest.CaptureFixture[str]
) -> None:
    http2 = ("Maven", "io.netty:netty-codec-http2", "4.1.91.Final")
    url = fake_osv(osv_knowing({http2: KNOWN[http2]}))
    code, out, err = run_main(capsys, "--osv-url", url)
    assert code == 0, err
    assert out.splitlines()[-1] == (
        f"audit: all {_package_count(out)} packages checked: no known vulnerabilities beyond "
        "the 1 accepted in scripts/audit.py (README: Security)"
    )


def test_no_known_vulnerabilities_only_when_every_package_was_checked(
    fake_osv: Callable[[Answer], str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = fake_osv(osv_knowing({}))
    code, out, err = run_main(capsys, "--osv-url", url)
    assert (code, err) == (0, "")
    count = _package_count(out)
    assert count > 150
    assert out.splitlines()[-1] == (
        f"audit: all {count} packages checked: no known vulnerabilities"
    )
    # The same clean answer, but with a library in the jar that could not be identified.
    jar = _jar(tmp_path / "model-server.jar", {"org/apache/commons/io/IOUtils.class": b"?"})
    code, out, err = run_main(capsys, "--osv-url", url, "--jar", str(jar))
    assert code == 2
    assert "no known vulnerabilities" not in out + err
    assert len(err.splitlines()) == 1
    assert err.startswith("audit: could not audit: the version of commons-io:commons-io in ")


def test_pages_of_an_answer_are_all_read(
    fake_osv: Callable[[Answer], str], capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        if body is None:
            return osv_knowing(KNOWN)(path, body)
        results: list[dict[str, Any]] = []
        for query in body["queries"]:
            if query["package"]["name"] != "io.netty:netty-codec-http":
                results.append({})
            elif "page_token" not in query:
                results.append({"vulns": [{"id": "GHSA-xpw8-rcwv-8f8p"}], "next_page_token": "2"})
            else:
                assert query["page_token"] == "2"
                results.append({"vulns": [{"id": "GHSA-fghv-69vj-qj49"}]})
        return 200, json.dumps({"results": results}).encode()

    code, out, _ = run_main(capsys, "--osv-url", fake_osv(answer))
    assert code == 1
    assert "io.netty:netty-codec-http:4.1.91.Final: GHSA-fghv-69vj-qj49" in out
    assert "io.netty:netty-codec-http:4.1.91.Final: GHSA-xpw8-rcwv-8f8p" in out


UNEXPECTED = {
    "not JSON": (200, b"<html>a captive portal</html>"),
    "HTTP 500": (500, b"{}"),
    "no results": (200, b'{"error": "quota"}'),
    "too few results": (200, b'{"results": [{}]}'),
    "vulns not a list": (200, b"{}"),  # replaced below by a well-sized answer of bad vulns
}


@pytest.mark.parametrize("case", UNEXPECTED)
def test_an_unexpected_answer_exits_2_in_one_line(
    case: str, fake_osv: Callable[[Answer], str], capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        if case == "vulns not a list" and body is not None:
            results = [{"vulns": "GHSA-oops"} for _ in body["queries"]]
            return 200, json.dumps({"results": results}).encode()
        return UNEXPECTED[case]

    url = fake_osv(answer)
    code, out, err = run_main(capsys, "--osv-url", url)
    assert code == 2
    expected = {
        "HTTP 500": f"audit: could not audit: OSV ({url}/querybatch) answered HTTP 500",
    }.get(case, f"audit: could not audit: OSV ({url}/querybatch) answered something unexpected")
    assert err.startswith(expected), err
    assert len(err.splitlines()) == 1
    assert "no known vulnerabilities" not in out + err


def test_an_empty_inventory_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(audit, "python_inventory", lambda python: ([], [], None))
    code, out, err = run_main(capsys, "--osv-url", "http://127.0.0.1:9/v1")
    assert code == 2
    assert err == (
        f"audit: could not audit: found no Python packages installed for {sys.executable}; "
        f"{sys.executable} has no mms package (multi-model-server): no jar to audit\n"
    )
    assert "no known vulnerabilities" not in out


def test_list_prints_the_inventory_without_querying(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "--list", "--osv-url", "http://127.0.0.1:9/v1")
    assert (code, err) == (0, "")
    assert "  io.netty:netty-codec-http:4.1.91.Final\n" in out
    assert "  multi-model-server==1.1.11\n" in out
    assert out.splitlines()[-1] == "(inventory only: not audited)"


def test_unreachable_osv_exits_2_fast_with_one_line_as_make_audit_runs_it() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    env = {key: value for key, value in os.environ.items() if key.lower() not in PROXY_VARS}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(AUDIT_SCRIPT), "--python", sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "AUDIT_OSV_URL": url},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"audit: could not audit: OSV ({url}/querybatch) is unreachable: "
        "[Errno 111] Connection refused"
    ]
    assert "io.netty:netty-codec-http:4.1.91.Final" in done.stdout  # the inventory, still
    assert "no known vulnerabilities" not in done.stdout + done.stderr
    assert "vulnerab" not in done.stdout.lower()
    assert elapsed < 10, elapsed


def test_the_tests_cannot_reach_beyond_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    # The guard above is what keeps these tests off the network: a real OSV is refused.
    with pytest.raises(AssertionError, match=r"api\.osv\.dev"):
        run_main(capsys, "--osv-url", "https://api.osv.dev/v1")


def test_the_accepted_risks_each_say_why() -> None:
    assert audit.ACCEPTED
    for vuln_id, reason in audit.ACCEPTED.items():
        assert vuln_id.startswith(("CVE-", "GHSA-")), vuln_id
        assert "README: Security" in reason and len(reason) > 40, vuln_id
