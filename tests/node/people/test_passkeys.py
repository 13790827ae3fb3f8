"""WebAuthn ceremonies with py_webauthn, answered by a software ES256 authenticator."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people import passkeys as pk
from mftp.node.people.accounts import Account, AccountStore
from mftp.node.people.errors import SignInRefused
from mftp.node.people.roles import Role
from tests.soft_authenticator import SoftAuthenticator

RP = pk.RelyingParty("node.st-olav.example", "St Olav MFTP", ("https://node.st-olav.example",))
HANDLE = b"h" * 16


@pytest.fixture
def account(store: AccountStore) -> Account:
    return store.add("dr.hansen", [Role.CLINICIAN])


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator(RP.rp_id, RP.origins[0])


def registered(account: Account, device: SoftAuthenticator, clock: FakeClock) -> Account:
    challenge = pk.Challenges(clock).issue(b"s", "register")
    options = pk.registration_options(RP, account, HANDLE, challenge)
    return pk.register(RP, account, device.create(options), challenge, clock.now_ms())


def test_registration_stores_id_public_key_and_counter(
    account: Account, device: SoftAuthenticator, clock: FakeClock
) -> None:
    challenge = pk.Challenges(clock).issue(b"s", "register")
    options = json.loads(pk.registration_options(RP, account, HANDLE, challenge))
    assert options["rp"] == {"id": RP.rp_id, "name": RP.name} and options["attestation"] == "none"
    acc = registered(account, device, clock)
    (passkey,) = acc.passkeys
    assert passkey.credential_id == device.credential_id and passkey.sign_count == 0
    assert acc.has_second_factor
    again = json.loads(pk.registration_options(RP, acc, HANDLE, challenge))
    assert len(again["excludeCredentials"]) == 1  # the same authenticator is not added twice


@pytest.mark.parametrize(
    "forgery",
    [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
    ],
)
def test_registration_refuses_another_origin_or_rp(
    account: Account, device: SoftAuthenticator, clock: FakeClock, forgery: dict[str, str]
) -> None:
    challenge = pk.Challenges(clock).issue(b"s", "register")
    options = pk.registration_options(RP, account, HANDLE, challenge)
    with pytest.raises(SignInRefused):
        pk.register(RP, account, device.create(options, **forgery), challenge, clock.now_ms())


def test_registration_refuses_another_challenge_and_garbage(
    account: Account, device: SoftAuthenticator, clock: FakeClock
) -> None:
    options = pk.registration_options(RP, account, HANDLE, b"a" * 32)
    with pytest.raises(SignInRefused):
        pk.register(RP, account, device.create(options), b"b" * 32, clock.now_ms())
    for garbage in ("", "{}", "not json", "x" * 70_000):
        with pytest.raises(SignInRefused):
            pk.register(RP, account, garbage, b"a" * 32, clock.now_ms())


def test_authentication_moves_the_counter(
    account: Account, device: SoftAuthenticator, clock: FakeClock
) -> None:
    acc = registered(account, device, clock)
    for expected in (1, 2):
        challenge = b"c" * 32
        options = pk.authentication_options(RP, acc, challenge)
        assert json.loads(options)["allowCredentials"][0]["id"]
        acc = pk.authenticate(RP, acc, device.get(options), challenge)
        assert acc.passkeys[0].sign_count == expected


def test_authentication_refusals(account: Account, device: SoftAuthenticator, clock: FakeClock) -> None:
    acc = registered(account, device, clock)
    challenge = b"c" * 32
    options = pk.authentication_options(RP, acc, challenge)
    acc = pk.authenticate(RP, acc, device.get(options), challenge)  # stored counter: 1
    # Each forgery below has one flaw only: its counter still grows past the stored one.
    cases = {
        "wrong challenge": lambda: (device.get(options), b"d" * 32),
        "wrong origin": lambda: (device.get(options, origin="https://evil.example"), challenge),
        "wrong rp": lambda: (device.get(options, rp_id="evil.example"), challenge),
        "wrong key": lambda: (device.get(options, key=ec.generate_private_key(ec.SECP256R1())), challenge),
        "cloned (counter did not grow)": lambda: (
            device.get(options, count_step=1 - device.sign_count),
            challenge,
        ),
    }
    for name, make in cases.items():
        credential, expected = make()
        with pytest.raises(SignInRefused):
            pk.authenticate(RP, acc, credential, expected)
            pytest.fail(name)
    device.sign_count = 10
    assert (
        pk.authenticate(RP, acc, device.get(options), challenge).passkeys[0].sign_count == 11
    )  # still works
    stranger = SoftAuthenticator(RP.rp_id, RP.origins[0])
    with pytest.raises(SignInRefused):
        pk.authenticate(RP, acc, stranger.get(options), challenge)
    with pytest.raises(SignInRefused):  # no passkey, no options
        pk.authentication_options(RP, account, challenge)


def test_challenges_are_single_use_bound_and_expire(clock: FakeClock) -> None:
    challenges = pk.Challenges(clock)
    issued = challenges.issue(b"session-1", "authenticate")
    assert len(issued) == 32
    with pytest.raises(SignInRefused):
        challenges.take(b"session-2", "authenticate")
    with pytest.raises(SignInRefused):
        challenges.take(b"session-1", "register")  # wrong purpose spends it too
    challenges.issue(b"session-1", "authenticate")
    clock.advance(pk.CEREMONY_TIMEOUT_MS + 1)
    with pytest.raises(SignInRefused):
        challenges.take(b"session-1", "authenticate")
    fresh = challenges.issue(b"session-1", "authenticate")
    assert challenges.take(b"session-1", "authenticate") == fresh
    with pytest.raises(SignInRefused):
        challenges.take(b"session-1", "authenticate")


def test_at_most_ten_passkeys(account: Account, clock: FakeClock) -> None:
    acc = account
    for _ in range(pk.MAX_PASSKEYS):
        acc = registered(acc, SoftAuthenticator(RP.rp_id, RP.origins[0]), clock)
    with pytest.raises(NodeUsageError, match="at most 10"):
        pk.registration_options(RP, acc, HANDLE, b"c" * 32)
    with pytest.raises(NodeUsageError):
        pk.RelyingParty("x", "x", ())
