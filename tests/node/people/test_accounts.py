"""The encrypted account store: operator actions, persistence, file modes, Argon2id passwords."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people.accounts import (
    TEST_COST,
    AccountsCorrupt,
    AccountStore,
    PasswordCost,
    Passwords,
    normalize_name,
)
from mftp.node.people.roles import Role

PASSWORD = "correct horse battery"


def test_add_list_disable_enable_and_reload(
    tmp_path: Path, identity: SigningIdentity, clock: FakeClock, store: AccountStore
) -> None:
    store.add("Dr.Hansen", [Role.CLINICIAN])
    store.add("ops", [Role.OPERATOR, Role.CLINICIAN])
    store.add("pacs-bridge", [Role.CLINICIAN], service=True)
    store.disable("dr.hansen")
    assert [a.name for a in store.accounts()] == ["dr.hansen", "ops", "pacs-bridge"]
    again = AccountStore(tmp_path / "people", identity, clock, TEST_COST)
    hansen = again.get("DR.HANSEN")
    assert hansen is not None and hansen.disabled and hansen.roles == {Role.CLINICIAN}
    assert hansen.principal == "user:dr.hansen" and hansen.created_ms == clock.now_ms()
    assert again.get("pacs-bridge").service  # type: ignore[union-attr]
    assert not again.enable("dr.hansen").disabled


def test_operator_actions_refuse_unknown_names_without_naming_them(store: AccountStore) -> None:
    with pytest.raises(NodeUsageError) as caught:
        store.disable("nobody.here")
    assert "nobody" not in str(caught.value)
    store.add("a", [Role.AUDITOR])
    with pytest.raises(NodeUsageError, match="exists"):
        store.add("A", [Role.AUDITOR])
    with pytest.raises(NodeUsageError, match="at least one role"):
        store.add("b", [])
    with pytest.raises(NodeUsageError, match="at least one role"):
        store.set_roles("a", [])
    assert store.set_roles("a", [Role.OPERATOR]).roles == {Role.OPERATOR}


@pytest.mark.parametrize("bad", ["", " ", "-x", "a" * 65, "dr hansen", "dr/../x"])
def test_names_have_one_spelling_and_a_narrow_alphabet(bad: str) -> None:
    assert normalize_name("  Dr.Hansen@StOlav ") == "dr.hansen@stolav"
    with pytest.raises(NodeUsageError):
        normalize_name(bad)


def test_files_are_private_and_name_no_user(tmp_path: Path, store: AccountStore) -> None:
    store.add("dr.hansen", [Role.CLINICIAN])
    store.set_password("dr.hansen", PASSWORD)
    folder = tmp_path / "people"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list(folder.iterdir())
    assert [f.name for f in files] == ["accounts.bin"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    data = files[0].read_bytes()
    for needle in (b"hansen", b"clinician", PASSWORD.encode(), b"argon2id"):
        assert needle not in data


def test_another_nodes_key_or_a_flipped_bit_is_damage(
    tmp_path: Path, identity: SigningIdentity, clock: FakeClock, store: AccountStore
) -> None:
    store.add("dr.hansen", [Role.CLINICIAN])
    with pytest.raises(AccountsCorrupt, match="restore it from backup"):
        AccountStore(tmp_path / "people", SigningIdentity.generate(), clock, TEST_COST)
    path = tmp_path / "people" / "accounts.bin"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(AccountsCorrupt):
        AccountStore(tmp_path / "people", identity, clock, TEST_COST)


def test_passwords_are_argon2id_and_checked(store: AccountStore) -> None:
    store.add("dr.hansen", [Role.CLINICIAN])
    account = store.set_password("dr.hansen", PASSWORD)
    assert account.password_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert store.check_password(account, PASSWORD)
    assert not store.check_password(account, PASSWORD + "!")
    assert not store.check_password(None, PASSWORD)  # unknown name: a dummy check, False
    with pytest.raises(NodeUsageError, match="12 to 256"):
        store.set_password("dr.hansen", "short")


def test_a_new_cost_rehashes_at_the_next_good_sign_in(
    tmp_path: Path, identity: SigningIdentity, clock: FakeClock, store: AccountStore
) -> None:
    store.add("dr.hansen", [Role.CLINICIAN])
    store.set_password("dr.hansen", PASSWORD)
    dearer = AccountStore(tmp_path / "people", identity, clock, PasswordCost(1, 16, 1))
    assert dearer.check_password(dearer.get("dr.hansen"), PASSWORD)
    assert "$m=16,t=1,p=1$" in dearer.get("dr.hansen").password_hash  # type: ignore[union-attr]


def test_directory_and_service_accounts_have_no_local_password(store: AccountStore) -> None:
    store.add("ad.user", [Role.CLINICIAN], directory=True)
    store.add("bridge", [Role.CLINICIAN], service=True)
    for name in ("ad.user", "bridge"):
        with pytest.raises(NodeUsageError, match="no local password"):
            store.set_password(name, PASSWORD)
        assert not store.check_password(store.get(name), PASSWORD)


def test_lockout_state_and_unlock(store: AccountStore, clock: FakeClock) -> None:
    store.add("dr.hansen", [Role.CLINICIAN])
    locked = store.update(
        "dr.hansen", lambda a: replace(a, failures=5, locked_until_ms=clock.now_ms() + 1000)
    )
    assert locked.locked(clock.now_ms())
    clock.advance(1000)
    assert not locked.locked(clock.now_ms())
    assert store.unlock("dr.hansen").failures == 0


def test_the_default_cost_is_a_real_one() -> None:
    cost = PasswordCost()
    assert (cost.time_cost, cost.memory_kib, cost.parallelism) == (1, 47104, 1)
    assert Passwords(TEST_COST).hash(PASSWORD) != Passwords(TEST_COST).hash(PASSWORD)  # salted
