#!/usr/bin/env python3
"""Benchmark of password hashing: what one sign-in's Argon2id check costs on this machine.

    bench_people.py [--quick] [--rounds N]

- ``hash_ms``: median milliseconds of one Argon2id check with the node's default
  :class:`~mftp.node.people.accounts.PasswordCost` (what every sign-in pays, once);
- ``dummy_ms``: the same for a name that matches no account (a dummy check): it should be
  ``hash_ms`` within the noise, or the time would tell whether a user exists;
- ``signin_unknown_ms`` / ``signin_wrong_password_ms``: a whole refused first sign-in step
  (:meth:`~mftp.node.people.signin.SignIn.password`) for a name that matches no account and
  for a real account with a wrong password, on a store in a temporary folder;
- baselines measured in the same run: ``rfc9106_ms`` (RFC 9106's second recommendation,
  64 MiB, 3 passes, 4 lanes) and ``owasp_19mib_ms`` (OWASP's 19 MiB, 2 passes, 1 lane).

The two cores may be shared with other work, so the JSON also gives the load average.
Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.people.abuse import AbuseGuard, AbusePolicy
from mftp.node.people.accounts import AccountStore, PasswordCost, Passwords, store_keys
from mftp.node.people.errors import SignInRefused
from mftp.node.people.roles import Role
from mftp.node.people.sessions import SessionBook, TokenBook
from mftp.node.people.signin import SignIn

PASSWORD = "correct horse battery staple"


def _median_ms(check: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        check()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def _signin_figures(rounds: int) -> dict[str, float]:
    """Refused sign-ins of an unknown name and of a known one, alternated (same load for both)."""
    with tempfile.TemporaryDirectory() as folder:
        clock = FakeClock()
        identity = SigningIdentity.generate()
        store = AccountStore(Path(folder), identity, clock)
        tokens = TokenBook(Path(folder), store_keys(identity)[0], clock)
        lenient = AbusePolicy(name_failures=10**6, address_failures=10**6, lockout_after=10**6)
        signin = SignIn(store, SessionBook(clock), tokens, AbuseGuard(clock, lenient), clock, lambda e: None)
        store.add("dr.hansen", [Role.CLINICIAN])
        store.set_password("dr.hansen", PASSWORD)
        times: dict[str, list[float]] = {"signin_unknown_ms": [], "signin_wrong_password_ms": []}
        for _ in range(rounds):
            for key, name in (("signin_unknown_ms", "nobody"), ("signin_wrong_password_ms", "dr.hansen")):
                start = time.perf_counter()
                with contextlib.suppress(SignInRefused):
                    signin.password(name, PASSWORD + "!", "10.0.0.1")
                times[key].append((time.perf_counter() - start) * 1000)
        return {key: round(statistics.median(values), 1) for key, values in times.items()}


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
    figures.update(_signin_figures(rounds))
    default = PasswordCost()
    figures["default_cost"] = f"t={default.time_cost},m={default.memory_kib}KiB,p={default.parallelism}"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
