"""Reading one HTTP/1.1 answer off a raw connection, as tests that compare bytes need it."""

from __future__ import annotations

import asyncio


async def read_answer(reader: asyncio.StreamReader, *,
                      bodyless: bool = False) -> tuple[bytes, bytes]:
    """(head, body) of the next answer: the head through its blank line, then as many
    bytes as its Content-Length says (none for an answer to HEAD: `bodyless`)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, b"" if bodyless else await reader.readexactly(length)
