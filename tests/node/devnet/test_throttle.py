"""The bandwidth-limiting TCP proxy (node/devnet/throttle.py), checked coarsely.

Timing bounds are loose on purpose: the proxy is a benchmark tool, and these
tests run on shared machines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from mftp.node.devnet.throttle import ThrottleProxy, TokenBucket

MB = 1_000_000


@pytest.fixture
async def sink_server() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server that reads everything and answers with the byte count, then 5 MB back."""
    received: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int((await reader.readline()).decode())
        got = len(await reader.readexactly(size))
        received.append(got)
        writer.write(b"x" * size)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()
    await server.wait_closed()


async def _round_trip(port: int, size: int) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{size}\n".encode() + b"y" * size)
    await writer.drain()
    assert len(await reader.readexactly(size)) == size
    writer.close()
    return time.monotonic() - started


async def test_5_mb_each_way_at_100_mbit(sink_server: tuple[int, list[int]]) -> None:
    port, received = sink_server
    async with ThrottleProxy("127.0.0.1", 0, "127.0.0.1", port, rate_mbit_per_s=100) as proxy:
        seconds = await _round_trip(proxy.port, 5 * MB)
    assert received == [5 * MB]
    # 5 MB at 12.5 MB/s is 0.4 s each way; up and down overlap only at the edges.
    assert 0.5 < seconds < 3.0, seconds
    assert proxy.bytes_forwarded >= 10 * MB


async def test_rate_zero_means_unlimited(sink_server: tuple[int, list[int]]) -> None:
    port, _ = sink_server
    async with ThrottleProxy("127.0.0.1", 0, "127.0.0.1", port, rate_mbit_per_s=0) as proxy:
        seconds = await _round_trip(proxy.port, 5 * MB)
    assert seconds < 3.0, seconds  # no pacing at all (a few ms on an idle machine)


async def test_drop_after_cuts_connections_once(sink_server: tuple[int, list[int]]) -> None:
    port, _ = sink_server
    async with ThrottleProxy("127.0.0.1", 0, "127.0.0.1", port, rate_mbit_per_s=0) as proxy:
        proxy.drop_after(1 * MB)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _round_trip(proxy.port, 5 * MB)
        assert proxy.drops == 1
        await _round_trip(proxy.port, 2 * MB)  # disarmed after one drop


async def test_token_bucket_paces() -> None:
    bucket = TokenBucket(1 * MB, capacity=64 * 1024)
    started = time.monotonic()
    for _ in range(8):
        await bucket.take(64 * 1024)
    # 512 KiB minus the 64 KiB burst at 1 MB/s: about 0.46 s.
    assert 0.3 < time.monotonic() - started < 2.0
