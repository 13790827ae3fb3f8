"""A TCP proxy that limits bandwidth, to measure transfers over a slower link.

``listen -> target``, each direction through its own token bucket of ``rate_mbit_per_s``
shared by all connections (like one link), with a burst of ``burst_bytes``.  It
forwards bytes untouched, so TLS passes through.  For tests it can also cut every
open connection once a number of bytes went through (:meth:`ThrottleProxy.drop_after`).

As a module::

    async with ThrottleProxy("127.0.0.1", 0, "127.0.0.1", 7800, rate_mbit_per_s=100) as proxy:
        url = f"https://127.0.0.1:{proxy.port}"

From blocking code (a test or a benchmark polling HTTP), on its own event loop in a thread::

    proxy = ThreadedProxy(ThrottleProxy("127.0.0.1", 0, "127.0.0.1", 7800, rate_mbit_per_s=100))
    ...
    proxy.close()

From the command line::

    python node/devnet/throttle.py --listen 127.0.0.1:7900 --target 127.0.0.1:7800 --mbit 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from typing import Final

from ..clock import SYSTEM_CLOCK

PIECE_BYTES: Final = 64 * 1024


class TokenBucket:
    """``rate`` bytes per second with a burst of ``capacity`` bytes; ``rate <= 0`` means unlimited."""

    def __init__(self, rate_bytes_per_s: float, capacity: int) -> None:
        self.rate = rate_bytes_per_s
        self.capacity = max(capacity, PIECE_BYTES)
        self._tokens = float(self.capacity)
        self._stamp = SYSTEM_CLOCK.monotonic_s()
        self._lock = asyncio.Lock()

    async def take(self, count: int) -> None:
        """Wait until ``count`` bytes may pass (callers queue in order behind the lock)."""
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = SYSTEM_CLOCK.monotonic_s()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= count:
                    self._tokens -= count
                    return
                await asyncio.sleep((count - self._tokens) / self.rate)


class ThrottleProxy:
    """Forward ``listen_host:listen_port`` to ``target_host:target_port`` at a limited rate."""

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        target_host: str,
        target_port: int,
        *,
        rate_mbit_per_s: float,
        burst_bytes: int = 256 * 1024,
    ) -> None:
        self.listen_host = listen_host
        self.port = listen_port
        self.target = (target_host, target_port)
        rate = rate_mbit_per_s * 1_000_000 / 8
        self._up = TokenBucket(rate, burst_bytes)
        self._down = TokenBucket(rate, burst_bytes)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._drop_after: int | None = None
        self.bytes_forwarded = 0
        self.connections = 0
        self.drops = 0

    async def start(self) -> None:
        """Start listening (``listen_port`` 0 picks a free port, see :attr:`port`)."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            self.close_connections()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ThrottleProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def drop_after(self, count: int | None) -> None:
        """Cut all open connections once ``count`` more bytes went through (once; ``None`` disarms)."""
        self._drop_after = None if count is None else self.bytes_forwarded + count

    def close_connections(self) -> None:
        """Cut every open connection now (abruptly, as a lost link would)."""
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, target_writer))
        pipes = [
            asyncio.create_task(self._pipe(client_reader, target_writer, self._up)),
            asyncio.create_task(self._pipe(target_reader, client_writer, self._down)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for writer in (client_writer, target_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bucket: TokenBucket
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(PIECE_BYTES)
                if not data:
                    break
                await bucket.take(len(data))
                writer.write(data)
                await writer.drain()
                self.bytes_forwarded += len(data)
                if self._drop_after is not None and self.bytes_forwarded >= self._drop_after:
                    self._drop_after = None
                    self.drops += 1
                    self.close_connections()
                    return


class ThreadedProxy:
    """A started :class:`ThrottleProxy` running on its own event loop in a daemon thread."""

    def __init__(self, proxy: ThrottleProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="throttle-proxy")
        self.thread.start()
        asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(10)

    def drop_after(self, count: int | None) -> None:
        """:meth:`ThrottleProxy.drop_after`, from another thread."""
        self.loop.call_soon_threadsafe(self.proxy.drop_after, count)

    def close(self) -> None:
        """Stop the proxy and its thread."""
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _main(args: argparse.Namespace) -> None:
    listen_host, listen_port = _host_port(args.listen)
    target_host, target_port = _host_port(args.target)
    proxy = ThrottleProxy(listen_host, listen_port, target_host, target_port, rate_mbit_per_s=args.mbit)
    async with proxy:
        print(f"throttling {args.listen} -> {args.target} at {args.mbit} Mbit/s", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept connections on")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument(
        "--mbit", type=float, default=100.0, help="rate per direction in Mbit/s (0: unlimited)"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
