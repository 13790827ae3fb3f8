"""TOTP (drift, replay), recovery codes (single use) and the enrolment code (expiry, single use)."""

from __future__ import annotations

import re
from dataclasses import replace

import pyotp
import pytest

from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people import second_factor as sf
from mftp.node.people.accounts import Account, AccountStore
from mftp.node.people.errors import SignInRefused
from mftp.node.people.roles import Role

STEP_MS = sf.TOTP_STEP_S * 1000


@pytest.fixture
def account(store: AccountStore) -> Account:
    return store.add("dr.hansen", [Role.CLINICIAN])


def enrolled(account: Account, clock: FakeClock) -> tuple[bytes, Account]:
    secret = sf.new_totp_secret()
    pending = sf.begin_totp(account, secret)
    code = sf.totp_code(secret, sf.totp_step(clock.now_ms()))
    confirmed = sf.confirm_totp(pending, code, clock.now_ms())
    clock.advance(2 * STEP_MS)  # the confirming step is spent; move past its drift window
    return secret, confirmed


def test_totp_codes_are_rfc6238_as_pyotp_and_apps_compute_them(clock: FakeClock) -> None:
    secret = sf.new_totp_secret()
    uri = sf.totp_uri(secret, "dr.hansen")
    assert uri.startswith("otpauth://totp/MFTP:dr.hansen?secret=") and "issuer=MFTP" in uri
    app = pyotp.parse_uri(uri)
    assert app.at(clock.now_ms() // 1000) == sf.totp_code(secret, sf.totp_step(clock.now_ms()))
    svg = sf.totp_qr_svg(uri)
    assert svg.startswith("<svg") and "</svg>" in svg


def test_enrolment_needs_a_good_code_before_the_secret_counts(account: Account, clock: FakeClock) -> None:
    secret = sf.new_totp_secret()
    pending = sf.begin_totp(account, secret)
    assert not pending.has_second_factor
    with pytest.raises(SignInRefused):
        sf.confirm_totp(pending, "000000" if sf.totp_code(secret, 0) != "000000" else "111111", 0)
    with pytest.raises(SignInRefused):
        sf.verify_totp(pending, sf.totp_code(secret, sf.totp_step(clock.now_ms())), clock.now_ms())
    _, confirmed = enrolled(account, clock)
    assert confirmed.has_second_factor and not confirmed.totp_pending
    with pytest.raises(NodeUsageError, match="no TOTP enrolment"):
        sf.confirm_totp(confirmed, "123456", clock.now_ms())


@pytest.mark.parametrize("offset_steps", [-1, 0, 1])
def test_one_step_of_drift_either_way_is_accepted(
    account: Account, clock: FakeClock, offset_steps: int
) -> None:
    secret, acc = enrolled(account, clock)
    step = sf.totp_step(clock.now_ms())
    after = sf.verify_totp(acc, sf.totp_code(secret, step + offset_steps), clock.now_ms())
    assert after.totp_last_step == step + offset_steps


@pytest.mark.parametrize("offset_steps", [-2, 2])
def test_two_steps_of_drift_are_refused(account: Account, clock: FakeClock, offset_steps: int) -> None:
    secret, acc = enrolled(account, clock)
    clock.advance(5 * STEP_MS)
    code = sf.totp_code(secret, sf.totp_step(clock.now_ms()) + offset_steps)
    with pytest.raises(SignInRefused):
        sf.verify_totp(acc, code, clock.now_ms())


def test_a_used_code_is_refused_the_second_time_even_within_its_window(
    account: Account, clock: FakeClock
) -> None:
    secret, acc = enrolled(account, clock)
    code = sf.totp_code(secret, sf.totp_step(clock.now_ms()))
    acc = sf.verify_totp(acc, code, clock.now_ms())
    with pytest.raises(SignInRefused):
        sf.verify_totp(acc, code, clock.now_ms())
    clock.advance(STEP_MS)  # the same code is still inside the drift window, and still refused
    with pytest.raises(SignInRefused):
        sf.verify_totp(acc, code, clock.now_ms())


def test_an_earlier_neighbours_code_is_refused_once_a_later_one_was_used(
    account: Account, clock: FakeClock
) -> None:
    secret, acc = enrolled(account, clock)
    step = sf.totp_step(clock.now_ms())
    acc = sf.verify_totp(acc, sf.totp_code(secret, step + 1), clock.now_ms())
    with pytest.raises(SignInRefused):
        sf.verify_totp(acc, sf.totp_code(secret, step), clock.now_ms())


def test_codes_are_trimmed_of_spaces(account: Account, clock: FakeClock) -> None:
    secret, acc = enrolled(account, clock)
    code = sf.totp_code(secret, sf.totp_step(clock.now_ms()))
    sf.verify_totp(acc, f" {code[:3]} {code[3:]} ", clock.now_ms())


def test_recovery_codes_are_ten_shown_once_hashed_and_single_use(
    account: Account, store: AccountStore
) -> None:
    codes, acc = sf.new_recovery_codes(account, store.keyed_hash)
    assert len(codes) == 10 == len(set(codes)) == len(acc.recovery_hashes)
    assert all(re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", c) for c in codes)
    assert not any(c.replace("-", "").encode() in b"".join(acc.recovery_hashes) for c in codes)
    acc = sf.use_recovery_code(acc, codes[3].upper().replace("-", " "), store.keyed_hash)
    assert len(acc.recovery_hashes) == 9
    with pytest.raises(SignInRefused):
        sf.use_recovery_code(acc, codes[3], store.keyed_hash)
    with pytest.raises(SignInRefused):
        sf.use_recovery_code(acc, "aaaa-aaaa-aaaa-aaaa", store.keyed_hash)
    new_codes, renewed = sf.new_recovery_codes(acc, store.keyed_hash)
    with pytest.raises(SignInRefused):  # a new set voids the old one
        sf.use_recovery_code(renewed, codes[0], store.keyed_hash)
    sf.use_recovery_code(renewed, new_codes[0], store.keyed_hash)


def test_enrolment_code_is_single_use(account: Account, store: AccountStore, clock: FakeClock) -> None:
    code, acc = sf.issue_enrolment_code(account, clock.now_ms(), store.keyed_hash)
    assert len(code.replace("-", "")) == 20
    spent = sf.redeem_enrolment_code(acc, code, clock.now_ms(), store.keyed_hash)
    with pytest.raises(SignInRefused):
        sf.redeem_enrolment_code(spent, code, clock.now_ms(), store.keyed_hash)


def test_enrolment_code_expires(account: Account, store: AccountStore, clock: FakeClock) -> None:
    code, acc = sf.issue_enrolment_code(account, clock.now_ms(), store.keyed_hash, ttl_ms=60_000)
    clock.advance(59_999)
    sf.redeem_enrolment_code(acc, code, clock.now_ms(), store.keyed_hash)
    clock.advance(1)
    with pytest.raises(SignInRefused):
        sf.redeem_enrolment_code(acc, code, clock.now_ms(), store.keyed_hash)


def test_enrolment_code_refusals(account: Account, store: AccountStore, clock: FakeClock) -> None:
    with pytest.raises(SignInRefused):  # none issued
        sf.redeem_enrolment_code(account, "", clock.now_ms(), store.keyed_hash)
    first, acc = sf.issue_enrolment_code(account, clock.now_ms(), store.keyed_hash)
    second, acc = sf.issue_enrolment_code(acc, clock.now_ms(), store.keyed_hash)
    with pytest.raises(SignInRefused):  # a new code voids the old one
        sf.redeem_enrolment_code(acc, first, clock.now_ms(), store.keyed_hash)
    with pytest.raises(SignInRefused):  # a disabled user cannot enrol
        sf.redeem_enrolment_code(replace(acc, disabled=True), second, clock.now_ms(), store.keyed_hash)
    bridge = store.add("bridge", [Role.CLINICIAN], service=True)
    with pytest.raises(NodeUsageError, match="API tokens only"):
        sf.issue_enrolment_code(bridge, clock.now_ms(), store.keyed_hash)
