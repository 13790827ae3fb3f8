#!/usr/bin/env python3
"""Benchmark of password hashing: what one sign-in's Argon2id check costs on this machine.

    bench_people.py [--quick] [--rounds N]

- ``hash_ms``: median milliseconds of one Argon2id check with the node's default
  :class:`~mftp.node.people.accounts.PasswordCost` (what every sign-in pays, once);
- ``dummy_ms``: the same for a name that matches no account (a dummy check): it should be
  ``hash_ms`` within the noise, or the time would tell whether a user exists;
- baselines measured in the same run: ``rfc9106_ms`` (RFC 9106's second recommendation,
  64 MiB, 3 passes, 4 lanes) and ``owasp_19mib_ms`` (OWASP's 19 MiB, 2 passes, 1 lane).

The two cores may be shared with other work, so the JSON also gives the load average.
Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from mftp.node.people.accounts import PasswordCost, Passwords

PASSWORD = "correct horse battery staple"


def _median_ms(check: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        check()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds per figure")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    load = os.getloadavg()[0]
    figures: dict[str, float | int | str] = {"load_avg_1min": round(load, 2), "rounds": rounds}
    costs = {
        "hash_ms": PasswordCost(),
        "rfc9106_ms": PasswordCost(time_cost=3, memory_kib=64 * 1024, parallelism=4),
        "owasp_19mib_ms": PasswordCost(time_cost=2, memory_kib=19 * 1024, parallelism=1),
    }
    for name, cost in costs.items():
        passwords = Passwords(cost)
        stored = passwords.hash(PASSWORD)
        figures[name] = _median_ms(lambda p=passwords, s=stored: p.verify(s, PASSWORD), rounds)
        print(f"{name}: {figures[name]} ms", file=sys.stderr)
        if name == "hash_ms":
            figures["dummy_ms"] = _median_ms(lambda p=passwords: p.verify("", PASSWORD), rounds)
    default = PasswordCost()
    figures["default_cost"] = f"t={default.time_cost},m={default.memory_kib}KiB,p={default.parallelism}"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
