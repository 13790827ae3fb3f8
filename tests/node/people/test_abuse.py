"""Rate limits per name and per address, lockout until a delay or an operator, wrong tokens."""

from __future__ import annotations

import pytest

from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people.abuse import AbuseGuard, AbusePolicy, FailureWindow, address_key
from mftp.node.people.accounts import AccountStore
from mftp.node.people.errors import RateLimited
from mftp.node.people.roles import Role

MIN_MS = 60_000


def test_name_window_limits_and_slides(clock: FakeClock) -> None:
    guard = AbuseGuard(clock)
    for _ in range(5):
        guard.check("dr.hansen", "10.0.0.1")
        guard.failed("dr.hansen", "10.0.0.1")
        clock.advance(MIN_MS)
    with pytest.raises(RateLimited) as caught:
        guard.check("dr.hansen", "10.0.0.2")  # another address does not help
    assert caught.value.status == 429 and caught.value.retry_after_s == pytest.approx(10 * 60)
    guard.check("dr.berg", "10.0.0.1")  # another name from the same address may still try
    clock.advance(10 * MIN_MS - 1)
    with pytest.raises(RateLimited):
        guard.check("dr.hansen", "10.0.0.1")
    clock.advance(1)
    guard.check("dr.hansen", "10.0.0.1")  # the first failure slid out of the window


def test_address_window_limits_many_names_from_one_address(clock: FakeClock) -> None:
    guard = AbuseGuard(clock, AbusePolicy(address_failures=3))
    for name in ("a", "b", "c"):
        guard.failed(name, "192.0.2.7")
    with pytest.raises(RateLimited):
        guard.check("d", "192.0.2.7")
    guard.check("d", "192.0.2.8")


def test_ipv6_clients_are_limited_by_their_64(clock: FakeClock) -> None:
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key(" 10.1.1.1 ") == "10.1.1.1" and address_key("unix-socket") == "unix-socket"
    guard = AbuseGuard(clock, AbusePolicy(address_failures=2))
    guard.failed("a", "2001:db8:1:2::5")
    guard.failed("b", "2001:db8:1:2::6")
    with pytest.raises(RateLimited):
        guard.check("c", "2001:db8:1:2:abcd::1")


def test_success_clears_the_names_window(clock: FakeClock) -> None:
    guard = AbuseGuard(clock)
    for _ in range(4):
        guard.failed("dr.hansen", "10.0.0.1")
    guard.succeeded("dr.hansen")
    guard.failed("dr.hansen", "10.0.0.1")
    guard.check("dr.hansen", "10.0.0.1")


def test_lockout_after_ten_failures_in_a_row_until_the_delay_passes(
    store: AccountStore, clock: FakeClock
) -> None:
    guard = AbuseGuard(clock)
    account = store.add("dr.hansen", [Role.CLINICIAN])
    for i in range(10):
        before = account
        account = guard.after_failure(account, clock.now_ms())
        assert guard.just_locked(before, account, clock.now_ms()) == (i == 9)
    assert account.locked(clock.now_ms())
    clock.advance(30 * MIN_MS - 1)
    assert account.locked(clock.now_ms())
    clock.advance(1)
    assert not account.locked(clock.now_ms())
    account = guard.after_failure(account, clock.now_ms())  # counts afresh after the delay
    assert account.failures == 1 and not account.locked(clock.now_ms())


def test_an_operator_unlocks_before_the_delay(store: AccountStore, clock: FakeClock) -> None:
    guard = AbuseGuard(clock, AbusePolicy(lockout_after=2))
    store.add("dr.hansen", [Role.CLINICIAN])
    for _ in range(2):
        store.update("dr.hansen", lambda a: guard.after_failure(a, clock.now_ms()))
    assert store.get("dr.hansen").locked(clock.now_ms())  # type: ignore[union-attr]
    assert not store.unlock("dr.hansen").locked(clock.now_ms())
    assert AbuseGuard.after_success(guard.after_failure(store.get("dr.hansen"), 0)).failures == 0  # type: ignore[arg-type]


def test_wrong_api_tokens_are_rate_limited_per_address(clock: FakeClock) -> None:
    guard = AbuseGuard(clock, AbusePolicy(token_failures=3, token_window_ms=MIN_MS))
    for _ in range(3):
        guard.check_token("10.0.0.1")
        guard.token_failed("10.0.0.1")
    with pytest.raises(RateLimited):
        guard.check_token("10.0.0.1")
    guard.check_token("10.0.0.2")
    clock.advance(MIN_MS)
    guard.check_token("10.0.0.1")


def test_tables_stay_bounded(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mftp.node.people.abuse.MAX_KEYS", 3)
    window = FailureWindow(clock, 1, MIN_MS)
    for key in "abcde":
        window.add(key)
    assert window.retry_after_s("a") is None and window.retry_after_s("e") is not None


def test_policy_must_be_positive() -> None:
    with pytest.raises(NodeUsageError):
        AbusePolicy(lockout_after=0)
