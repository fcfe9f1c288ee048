"""A small HTTP/1.1 client on asyncio streams, for publishing and probing.

Publishing is on the measured path (its send timestamp is embedded in the
payload), so it uses kept-alive connections from a :class:`HttpPool`, with
no per-request set-up. Responses with ``Content-Length`` or chunked bodies
are understood; nothing else is needed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["HttpConnection", "HttpError", "HttpPool", "Response", "request"]


class HttpError(Exception):
    """The server could not be reached or answered something unreadable."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpConnection:
    """One kept-alive connection to ``host:port``."""

    __slots__ = ("_reader", "_writer", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> Response:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        try:
            return await self._read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            self.close()
            raise HttpError(f"{method} {path}: {exc!r}") from exc

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> Response:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            return Response(status, b"".join(chunks))
        length = int(headers.get("content-length", "0"))
        return Response(status, await reader.readexactly(length) if length else b"")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None


class HttpPool:
    """Up to ``size`` kept-alive connections; a request waits for a free one."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self._idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        self._all = [HttpConnection(host, port) for _ in range(size)]
        for conn in self._all:
            self._idle.put_nowait(conn)

    @property
    def idle(self) -> int:
        return self._idle.qsize()

    async def acquire(self) -> HttpConnection:
        return await self._idle.get()

    def release(self, conn: HttpConnection) -> None:
        self._idle.put_nowait(conn)

    async def warm(self, path: str = "/healthz") -> None:
        """Open every connection now, outside any measured window."""
        for conn in self._all:
            await conn.request("GET", path)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


async def request(
    host: str, port: int, method: str, path: str, *, body: bytes = b"", timeout: float = 10.0
) -> Response:
    """One request on a fresh connection (for probes and checks)."""
    conn = HttpConnection(host, port)
    try:
        return await asyncio.wait_for(conn.request(method, path, body), timeout)
    except (TimeoutError, OSError) as exc:
        raise HttpError(f"{method} http://{host}:{port}{path}: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            conn.close()
