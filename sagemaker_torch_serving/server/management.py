"""The serving process's client of MMS's management API: the plugin's ``/serving`` endpoint
(java/ServingControl.java) over the Unix socket in the run directory, which only this server
can reach."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any


class ManagementError(Exception):
    """MMS refused a management call; the message says which and why."""


class ManagementClient:
    """The plugin's /serving endpoint on MMS's management API, over its Unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def state(self) -> dict[str, Any] | None:
        """``{"loaded_workers": n, "draining": b, ...}``, or None while MMS does not answer."""
        if not self.path.exists():
            return None
        try:
            return self._call("GET", "/serving")
        except OSError:
            return None

    def put(self, target: str) -> dict[str, Any]:
        return self._call("PUT", target)

    def _call(self, method: str, target: str) -> dict[str, Any]:
        connection = _UnixHTTPConnection(self.path, timeout=5.0)
        try:
            connection.request(method, target)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise ManagementError(
                f"MMS answered {method} {target} with {response.status}: {body!r}"
            )
        answer: dict[str, Any] = json.loads(body)  # MMS answers with a JSON object
        return answer


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)
