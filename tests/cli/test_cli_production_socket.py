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
