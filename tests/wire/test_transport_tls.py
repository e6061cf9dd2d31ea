"""TLS failures over real loopback sockets: only an untrusted certificate proves a start never left.

A certificate the client refuses fails the handshake, before a byte of the request is written: the
start may be retried. A TLS error after the handshake (here, a corrupt record where the answer
should be) comes after the request went out and may have created a stream: never retried.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from streamlife import StreamKind
from streamlife.errors import NotSentError, OutcomeUnknownError
from streamlife.transport import HttpTransport, RetryPolicy

HERE = Path(__file__).resolve().parents[1] / "tls"  # a self-signed certificate for 127.0.0.1, for tests only
PARAMS = {"audio_url": "rtmp://example.invalid/live"}
CORRUPT_RECORD = b"\x17\x03\x03\x00\x20" + b"\x00" * 32  # application data that fails to decrypt


@contextmanager
def tls_server_that_breaks_its_answers() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTPS server that reads each request, then answers with garbage. Yields (url, requests)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(HERE / "cert.pem", HERE / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    received: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            with raw:
                try:
                    with context.wrap_socket(raw, server_side=True) as conn:
                        received.append(conn.recv(65536).split(b"\r\n")[0])
                        os.write(conn.fileno(), CORRUPT_RECORD)  # under the TLS layer: unreadable
                        done.wait(0.1)
                except (ssl.SSLError, OSError):
                    pass  # a client that refused the handshake

    thread = threading.Thread(target=serve, name="tls-server", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        done.set()
        thread.join()
        listener.close()


def http(url: str, *, trust_the_server: bool) -> HttpTransport:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(HERE / "cert.pem") if trust_the_server else True
    return HttpTransport(
        "sk-mai-test", base_url=url, session=session, retry=RetryPolicy(attempts=3, base=0.01, deadline=5)
    )


def test_a_tls_error_after_the_request_left_makes_a_start_unknown_and_it_is_never_retried() -> None:
    with tls_server_that_breaks_its_answers() as (url, received), pytest.raises(OutcomeUnknownError):
        http(url, trust_the_server=True).start(StreamKind.AUDIO, PARAMS)
    assert received == [b"POST /audio-stream/start HTTP/1.1"]  # it left, once


def test_an_untrusted_certificate_means_the_start_never_left() -> None:
    with tls_server_that_breaks_its_answers() as (url, received), pytest.raises(NotSentError):
        http(url, trust_the_server=False).start(StreamKind.AUDIO, PARAMS)
    assert received == []  # three attempts, each refused at the handshake: nothing was sent
