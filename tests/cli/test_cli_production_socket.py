"""serve's listening socket: what asyncio's transports make of the connections it accepts."""

from __future__ import annotations

import asyncio
import socket

from streamlife.cli.production import bind


def test_connections_accepted_on_serves_socket_send_small_answers_at_once() -> None:
    """asyncio turns Nagle's algorithm off only for sockets it knows are TCP (their ``proto``),
    and an accepted socket takes its listener's. Left on, each small answer on a kept-alive
    connection waits for the client's delayed ACK under an asyncio loop without uvloop."""
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    nodelay: list[int] = []

    async def main() -> None:
        accepted = asyncio.Event()

        def connected(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()

        server = await asyncio.start_server(connected, sock=listener)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await accepted.wait()
            writer.close()

    asyncio.run(main())
    assert len(nodelay) == 1
    assert nodelay[0] != 0


def test_serving_collects_young_objects_less_often_and_puts_the_threshold_back() -> None:
    """A serving process raises the collector's young-generation threshold while it serves (each
    request's objects die with it), and leaves the process's setting as it found it."""
    import gc

    from streamlife.cli.production import SERVING_GC_THRESHOLD, UvicornSettings, serving

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        settings = UvicornSettings(keep_alive=5, limit_concurrency=None, graceful=1)
        with serving(app, bind("127.0.0.1", 0), settings):
            assert gc.get_threshold() == (SERVING_GC_THRESHOLD, *before[1:])
        assert gc.get_threshold() == (700, *before[1:])
    finally:
        gc.set_threshold(*before)
