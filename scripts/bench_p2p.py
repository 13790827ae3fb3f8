"""Peer network figures for the consensus benchmark: latency and throughput through PeerNetwork.

Two ``PeerNetwork`` instances in one process over loopback, each with its own
trio thread, both bridged to this asyncio loop.  Measured:

* round trip of a small message (``{"seq": n}``) on the reused streams:
  asyncio -> trio -> libp2p -> trio -> asyncio handler -> send back -> ... -> asyncio;
* one-way throughput of 1 KB messages (time from the first send to the last delivery);
* baseline: the same round trip over plain asyncio TCP on loopback, measured in the same run.

Usage: ``python scripts/bench_p2p.py [--quick]``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from mftp.crypto.signing import SigningIdentity
from mftp.node.p2p.network import P2PLimits, PeerNetwork


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _tcp_baseline(round_trips: int) -> list[float]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = []
    for _ in range(round_trips):
        started = time.perf_counter()
        writer.write(b"x" * 16)
        await reader.readexactly(16)
        samples.append(time.perf_counter() - started)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return samples


async def measure(
    round_trips: int = 2000, messages: int = 20000, message_bytes: int = 1024
) -> dict[str, Any]:
    """Run both measurements and return named figures (milliseconds, messages/s, MB/s)."""
    alice, bob = SigningIdentity.generate(), SigningIdentity.generate()
    members = {alice.public.sign_key: "alice", bob.public.sign_key: "bob"}
    # Queues large enough that the throughput run measures the wire, not drops.
    queue_bytes = max(16 * 1024 * 1024, (messages + 16) * (message_bytes + 64))
    limits = P2PLimits(send_queue_messages=messages + 16, send_queue_bytes=queue_bytes)
    loop = asyncio.get_running_loop()
    pong: asyncio.Future[int] = loop.create_future()
    received = 0
    all_in: asyncio.Future[None] = loop.create_future()

    def on_alice(sender: bytes, channel: str, value: Any) -> None:
        if channel == "pong" and not pong.done():
            pong.set_result(value["seq"])

    def on_bob(sender: bytes, channel: str, value: Any) -> None:
        nonlocal received
        if channel == "ping":
            net_b.send(sender, "pong", value)
        else:
            received += 1
            if received == messages and not all_in.done():
                all_in.set_result(None)

    net_a = PeerNetwork(alice, ["/ip4/127.0.0.1/tcp/0"], members, on_message=on_alice, limits=limits)
    net_b = PeerNetwork(bob, ["/ip4/127.0.0.1/tcp/0"], members, on_message=on_bob, limits=limits)
    async with net_a, net_b:
        net_a.add_peer_address(bob.public.sign_key, net_b.listen_addrs()[0])
        net_b.add_peer_address(alice.public.sign_key, net_a.listen_addrs()[0])
        samples = []
        for seq in range(round_trips + 20):  # the first 20 warm up (and wait for the connections)
            pong = loop.create_future()
            started = time.perf_counter()
            net_a.send(bob.public.sign_key, "ping", {"seq": seq})
            await asyncio.wait_for(pong, 30)
            if seq >= 20:
                samples.append(time.perf_counter() - started)
        payload = b"\x00" * message_bytes
        started = time.perf_counter()
        for seq in range(messages):
            net_a.send(bob.public.sign_key, "gossip", {"seq": seq, "data": payload})
            if seq % 256 == 255:
                await asyncio.sleep(0)  # let deliveries and credit releases run, as a real loop would
        await asyncio.wait_for(all_in, 120)
        elapsed = time.perf_counter() - started
        streams = net_a.stats().peers[bob.public.sign_key].streams_opened
    baseline = await _tcp_baseline(round_trips)
    return {
        "rtt_p50_ms": round(statistics.median(samples) * 1000, 3),
        "rtt_p99_ms": round(_percentile(samples, 0.99) * 1000, 3),
        "throughput_msgs_per_s": round(messages / elapsed),
        "throughput_mb_per_s": round(messages * message_bytes / elapsed / 1e6, 2),
        "message_bytes": message_bytes,
        "messages": messages,
        "round_trips": round_trips,
        "streams_opened_a_to_b": streams,
        "baseline_asyncio_tcp_rtt_p50_ms": round(statistics.median(baseline) * 1000, 3),
    }


def main() -> None:
    """Command line entry: print the figures, JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, well under a minute")
    args = parser.parse_args()
    sizes = {"round_trips": 500, "messages": 5000} if args.quick else {"round_trips": 3000, "messages": 50000}
    figures = asyncio.run(measure(**sizes))
    for name, value in figures.items():
        print(f"{name:>34}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
