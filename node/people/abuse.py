"""Limits on guessing: failed sign-ins per account name and per client address, lockout, wrong tokens.

Three defences, all on the node's clock (a :class:`~mftp.node.clock.FakeClock` in tests):

- **Rate limits** (in memory, sliding windows on the monotonic reading): after
  :attr:`AbusePolicy.name_failures` failures for one typed name, or
  :attr:`AbusePolicy.address_failures` from one client address, within their windows, further
  attempts are refused with :class:`~.errors.RateLimited` before any password is checked.  The
  name window is keyed by the name as typed (normalised), whether or not an account has it, so
  being limited says nothing about who exists.  IPv6 clients are keyed by their /64, which one
  attacker usually holds whole.
- **Lockout** (stored in the account, so a restart does not lift it): after
  :attr:`AbusePolicy.lockout_after` failures in a row, the account refuses even its right
  password until :attr:`AbusePolicy.lockout_ms` passes or an operator unlocks it.  The answer is
  the same :class:`~.errors.SignInRefused` as for a wrong password.
- **Wrong API tokens**: :attr:`AbusePolicy.token_failures` per address per window.

Memory is bounded: each table keeps at most :data:`MAX_KEYS` keys and forgets the stalest.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Final

from ..clock import Clock
from ..errors import NodeUsageError
from .accounts import Account
from .errors import RateLimited

MAX_KEYS: Final = 100_000


@dataclass(frozen=True)
class AbusePolicy:
    """How many failures are tolerated, and for how long they count.

    Per address is looser than per name: a hospital's staff often share one NAT address.
    """

    name_failures: int = 5
    name_window_ms: int = 15 * 60 * 1000
    address_failures: int = 30
    address_window_ms: int = 15 * 60 * 1000
    lockout_after: int = 10
    lockout_ms: int = 30 * 60 * 1000
    token_failures: int = 20
    token_window_ms: int = 60 * 1000

    def __post_init__(self) -> None:
        counts = (self.name_failures, self.address_failures, self.lockout_after, self.token_failures)
        windows = (self.name_window_ms, self.address_window_ms, self.lockout_ms, self.token_window_ms)
        if min(counts) < 1 or min(windows) <= 0:
            raise NodeUsageError("abuse limits are positive")


def address_key(address: str) -> str:
    """The key a client address is limited under: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return address[:64]  # not an IP (a unix socket, a test): limit it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureWindow:
    """Failures per key within a sliding window; full when ``limit`` fall inside it."""

    def __init__(self, clock: Clock, limit: int, window_ms: int) -> None:
        self._clock, self.limit, self.window_s = clock, limit, window_ms / 1000
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        cutoff = self._clock.monotonic_s() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def retry_after_s(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None if it may now."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return None
        return max(0.0, times[-self.limit] + self.window_s - self._clock.monotonic_s())

    def add(self, key: str) -> None:
        """Count one failure of ``key``."""
        times = self._recent(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self.limit)
            if len(self._times) > MAX_KEYS:
                self._times.popitem(last=False)
        self._times.move_to_end(key)
        times.append(self._clock.monotonic_s())

    def clear(self, key: str) -> None:
        """Forget ``key``'s failures (after a good sign-in)."""
        self._times.pop(key, None)


class AbuseGuard:
    """The limits of one node: ask :meth:`check` before a sign-in attempt, then report it."""

    def __init__(self, clock: Clock, policy: AbusePolicy = AbusePolicy()) -> None:
        self.policy = policy
        self._names = FailureWindow(clock, policy.name_failures, policy.name_window_ms)
        self._addresses = FailureWindow(clock, policy.address_failures, policy.address_window_ms)
        self._tokens = FailureWindow(clock, policy.token_failures, policy.token_window_ms)

    def check(self, name_key: str, address: str) -> None:
        """Raise :class:`RateLimited` if this name or this address has failed too often lately."""
        waits = [self._names.retry_after_s(name_key), self._addresses.retry_after_s(address_key(address))]
        longest = max((w for w in waits if w is not None), default=None)
        if longest is not None:
            raise RateLimited(longest)

    def failed(self, name_key: str, address: str) -> None:
        """Count a failed attempt against the name and the address."""
        self._names.add(name_key)
        self._addresses.add(address_key(address))

    def succeeded(self, name_key: str) -> None:
        """A good sign-in clears its name's window (not its address's: others may share it)."""
        self._names.clear(name_key)

    def check_token(self, address: str) -> None:
        """Raise :class:`RateLimited` if this address presented too many wrong API tokens lately."""
        wait = self._tokens.retry_after_s(address_key(address))
        if wait is not None:
            raise RateLimited(wait)

    def token_failed(self, address: str) -> None:
        """Count a wrong (unknown, expired or revoked) API token from ``address``."""
        self._tokens.add(address_key(address))

    def after_failure(self, account: Account, now_ms: int) -> Account:
        """The account with one more failure, locked for :attr:`AbusePolicy.lockout_ms` at the limit."""
        failures = account.failures + 1
        locked_until = account.locked_until_ms
        if locked_until and not account.locked(now_ms):
            # The delay has passed: count afresh, or one typo would lock the user again.
            failures, locked_until = 1, 0
        if failures >= self.policy.lockout_after and not account.locked(now_ms):
            locked_until = now_ms + self.policy.lockout_ms
        return replace(account, failures=failures, locked_until_ms=locked_until)

    @staticmethod
    def after_success(account: Account) -> Account:
        """The account with its failures forgotten."""
        return replace(account, failures=0, locked_until_ms=0)

    def just_locked(self, before: Account, after: Account, now_ms: int) -> bool:
        """Whether this failure is the one that locked the account (for its security event)."""
        return after.locked(now_ms) and not before.locked(now_ms)
