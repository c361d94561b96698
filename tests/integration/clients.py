"""Clients that load a server without pause, for the drain tests (natively and in the image)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests


class Client(threading.Thread):
    """Posts one body without pause on a keep-alive session until stopped, and counts what
    came back: answers as expected, wrong ones, refusals (a 503 or a refused connection: the
    request was not accepted) and resets (a request sent and never answered)."""

    def __init__(
        self, url: str, body: bytes, content_type: str, expected: Callable[[bytes], bool]
    ) -> None:
        super().__init__()
        self.url = f"{url}/invocations"
        self.body = body
        self.headers = {"Content-Type": content_type}
        self.expected = expected
        self.stop = threading.Event()
        self.answered = 0
        self.wrong: list[str] = []
        self.refused = 0
        self.resets: list[str] = []

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    response = session.post(
                        self.url, data=self.body, headers=self.headers, timeout=60
                    )
                except requests.ConnectionError as error:
                    if "Connection refused" in str(error):
                        self.refused += 1
                        time.sleep(0.01)
                    else:
                        self.resets.append(str(error))
                    continue
                if response.status_code == 503:
                    self.refused += 1
                elif response.status_code == 200 and self.expected(response.content):
                    self.answered += 1
                else:
                    self.wrong.append(f"{response.status_code} {response.text[:200]}")


def load(clients: list[Client], stop: Callable[[], None]) -> None:
    """Start the clients, let them run a moment, call ``stop`` (which stops the server) and
    stop the clients, also when ``stop`` fails."""
    for client in clients:
        client.start()
    try:
        time.sleep(1.5)
        stop()
        time.sleep(0.5)
    finally:
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(70)


def summary(clients: list[Client]) -> str:
    answered = sum(client.answered for client in clients)
    refused = sum(client.refused for client in clients)
    resets = sum(len(client.resets) for client in clients)
    wrong = sum(len(client.wrong) for client in clients)
    return f"{answered} answered, {refused} refused, {resets} resets, {wrong} wrong"
