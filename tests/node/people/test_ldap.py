"""The directory as the password factor, against a real OpenLDAP (Debian's slapd) the tests start.

One slapd serves the module (start ~0.1-1 s), on ldap:// (StartTLS) and ldaps://, with a test CA.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pyotp
import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.errors import ConfigError
from mftp.node.people import second_factor as sf
from mftp.node.people.abuse import AbuseGuard
from mftp.node.people.accounts import TEST_COST, AccountStore, store_keys
from mftp.node.people.errors import SignInRefused
from mftp.node.people.events import SecurityEvent
from mftp.node.people.ldap import DirectoryConfig, LdapDirectory
from mftp.node.people.roles import Role
from mftp.node.people.sessions import SessionBook, SessionState, TokenBook
from mftp.node.people.signin import SignIn
from tests.ldap_server import SEARCH_DN, SEARCH_PASSWORD, SUFFIX, LdapServer, run_slapd, slapd_available

pytestmark = pytest.mark.slow

PEOPLE = {"dr.hansen": "directory password 1", "dr.berg": "another one 2", "twin": "x", "twin*": "y"}
UID_FILTER = "(&(objectClass=inetOrgPerson)(uid={name}))"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    if not slapd_available():
        pytest.fail("slapd is not installed: run `make test`, which installs Debian's slapd and ldap-utils")
    with run_slapd(tmp_path_factory.mktemp("slapd"), PEOPLE) as server:
        yield server


def directory(slapd: LdapServer, url: str, **changes: object) -> LdapDirectory:
    values: dict[str, object] = {
        "url": url,
        "base_dn": f"ou=people,{SUFFIX}",
        "bind_dn": SEARCH_DN,
        "bind_password": SEARCH_PASSWORD,
        "user_filter": UID_FILTER,
        "ca_file": str(slapd.ca_file),
        "timeout_s": 5.0,
    }
    values.update(changes)
    return LdapDirectory(DirectoryConfig(**values))  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["ldaps", "starttls"])
def test_right_and_wrong_passwords(slapd: LdapServer, scheme: str) -> None:
    d = directory(slapd, slapd.ldaps_url if scheme == "ldaps" else slapd.ldap_url)
    assert d.find_dn("dr.hansen") == f"uid=dr.hansen,ou=people,{SUFFIX}"
    assert d.check_password("dr.hansen", "directory password 1")
    assert not d.check_password("dr.hansen", "directory password 2")
    assert not d.check_password("dr.hansen", "another one 2")  # another user's password
    assert not d.check_password("nobody", "directory password 1")
    assert d.unreachable == 0


def test_an_empty_password_is_never_an_anonymous_bind(slapd: LdapServer) -> None:
    assert not directory(slapd, slapd.ldaps_url).check_password("dr.hansen", "")


def test_filter_injection_is_escaped(slapd: LdapServer) -> None:
    d = directory(slapd, slapd.ldaps_url)
    assert d.find_dn("dr.*") is None  # a wildcard is a literal, not a search for everyone
    assert d.find_dn("twin*") == f"uid=twin*,ou=people,{SUFFIX}"
    assert not d.check_password("*)(uid=dr.hansen", "directory password 1")


def test_several_matches_are_no_match(slapd: LdapServer) -> None:
    d = directory(
        slapd, slapd.ldaps_url, user_filter="(&(objectClass=inetOrgPerson)(|(uid={name})(uid=twin)))"
    )
    assert d.find_dn("dr.berg") is None


def test_a_server_certificate_from_another_ca_is_refused(slapd: LdapServer) -> None:
    for url in (slapd.ldaps_url, slapd.ldap_url):
        d = directory(slapd, url, ca_file=str(slapd.other_ca_file))
        assert not d.check_password("dr.hansen", "directory password 1")
        assert d.unreachable == 1


def test_a_wrong_search_account_or_an_absent_server_refuses(slapd: LdapServer) -> None:
    assert not directory(slapd, slapd.ldaps_url, bind_password="wrong").check_password(
        "dr.hansen", "directory password 1"
    )
    gone = directory(slapd, "ldaps://127.0.0.1:9", timeout_s=1.0)
    assert not gone.check_password("dr.hansen", "directory password 1") and gone.unreachable == 1


def test_the_server_refuses_a_bind_without_tls(slapd: LdapServer) -> None:
    """The test server itself demands TLS before binds (security simple_bind=128)."""
    conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=slapd.ldap_port), SEARCH_DN, SEARCH_PASSWORD)
    assert not conn.bind()


def test_config_from_a_node_toml_table(tmp_path: Path) -> None:
    (tmp_path / "search.secret").write_text("s3cret\n", encoding="utf-8")
    (tmp_path / "ca.pem").write_text("-", encoding="utf-8")
    config = DirectoryConfig.from_table(
        {
            "url": "ldap://dc1.hospital.example",
            "base_dn": "dc=hospital,dc=example",
            "bind_dn": "cn=mftp,dc=hospital,dc=example",
            "bind_password_file": "search.secret",
            "ca_file": "ca.pem",
        },
        tmp_path,
    )
    assert config.bind_password == "s3cret" and not config.ldaps and "sAMAccountName" in config.user_filter
    with pytest.raises(ConfigError) as caught:
        DirectoryConfig.from_table(
            {
                "url": "http://x",
                "user_filter": "(uid=x)",
                "bind_password_file": "none",
                "timeout_s": 0,
                "port": 1,
            },
            tmp_path,
        )
    text = str(caught.value)
    for key in ("url", "base_dn", "bind_dn", "user_filter", "bind_password_file", "timeout_s", "port"):
        assert f"people.directory.{key}" in text


def test_a_directory_account_enrols_and_signs_in_with_its_directory_password(
    slapd: LdapServer, tmp_path: Path
) -> None:
    """The directory supplies the password factor; the node still asks for its own TOTP."""
    clock, identity, events = FakeClock(), SigningIdentity.generate(), list[SecurityEvent]()
    store = AccountStore(tmp_path / "people", identity, clock, TEST_COST)
    tokens = TokenBook(tmp_path / "people", store_keys(identity)[0], clock)
    signin = SignIn(
        store,
        SessionBook(clock),
        tokens,
        AbuseGuard(clock),
        clock,
        events.append,
        directory(slapd, slapd.ldap_url),
    )
    store.add("dr.hansen", [Role.CLINICIAN], directory=True)
    holder: list[str] = []

    def issue(a):  # type: ignore[no-untyped-def]
        code, changed = sf.issue_enrolment_code(a, clock.now_ms(), store.keyed_hash)
        holder.append(code)
        return changed

    store.update("dr.hansen", issue)
    with pytest.raises(SignInRefused):
        signin.enrol_begin("dr.hansen", holder[0], "not the directory password", "10.0.0.1")
    start = signin.enrol_begin("dr.hansen", holder[0], PEOPLE["dr.hansen"], "10.0.0.1")
    secret = base64.b32decode(pyotp.parse_uri(start.totp_uri).secret)
    signin.enrol_confirm(start.session_id, sf.totp_code(secret, sf.totp_step(clock.now_ms())), "10.0.0.1")
    clock.advance(60_000)
    assert store.get("dr.hansen").password_hash == ""  # type: ignore[union-attr]  # nothing kept locally
    session_id, _ = signin.password("dr.hansen", PEOPLE["dr.hansen"], "10.0.0.1")
    session = signin.second_factor(session_id, sf.totp_code(secret, sf.totp_step(clock.now_ms())), "10.0.0.1")
    assert session.state is SessionState.ACTIVE
    with pytest.raises(SignInRefused):
        signin.password("dr.hansen", "wrong", "10.0.0.1")


def test_outages_are_logged_without_the_name(slapd: LdapServer, caplog: pytest.LogCaptureFixture) -> None:
    gone = directory(slapd, "ldaps://127.0.0.1:9", timeout_s=1.0)
    with caplog.at_level("WARNING", logger="mftp.node.people"):
        gone.check_password("dr.hansen", "directory password 1")
    assert caplog.records and all(
        "hansen" not in r.getMessage() and "hansen" not in str(getattr(r, "fields", ""))
        for r in caplog.records
    )
    assert all("directory password" not in str(getattr(r, "fields", "")) for r in caplog.records)


def test_node_toml_people_directory_supplies_the_password_factor(slapd: LdapServer, tmp_path: Path) -> None:
    """``[people.directory]`` in node.toml, as an operator writes it, wired by build_people."""
    from mftp.node.config import load_config
    from mftp.node.people.service import build_people

    (tmp_path / "ldap.password").write_text(SEARCH_PASSWORD + "\n")
    (tmp_path / "node.toml").write_text(
        '[node]\nname = "hospital-a"\ncountry = "SE"\n'
        "[people]\npassword_memory_kib = 8\n"
        "[people.directory]\n"
        f'url = "{slapd.ldaps_url}"\n'
        f'base_dn = "ou=people,{SUFFIX}"\n'
        f'bind_dn = "{SEARCH_DN}"\n'
        'bind_password_file = "ldap.password"\n'
        f'user_filter = "{UID_FILTER}"\n'
        f'ca_file = "{slapd.ca_file}"\n'
    )
    clock = FakeClock()
    events: list[SecurityEvent] = []
    people = build_people(
        load_config(tmp_path / "node.toml"),
        SigningIdentity.generate(),
        clock,
        events.append,
        tmp_path / "people",
    )
    people.store.add("dr.hansen", [Role.CLINICIAN], directory=True)
    code = sf.issue_enrolment_code(people.store.get("dr.hansen"), clock.now_ms(), people.store.keyed_hash)  # type: ignore[arg-type]
    people.store.update("dr.hansen", lambda _: code[1])
    with pytest.raises(SignInRefused):  # a local password is not the directory's
        people.signin.enrol_begin("dr.hansen", code[0], "not the directory password", "10.0.0.1")
    start = people.signin.enrol_begin("dr.hansen", code[0], PEOPLE["dr.hansen"], "10.0.0.1")
    totp = pyotp.TOTP(pyotp.parse_uri(start.totp_uri).secret)
    people.signin.enrol_confirm(start.session_id, totp.at(clock.now_ms() / 1000), "10.0.0.1")
    clock.advance(30_000)
    session_id, session = people.signin.password("dr.hansen", PEOPLE["dr.hansen"], "10.0.0.1")
    people.signin.second_factor(session_id, totp.at(clock.now_ms() / 1000), "10.0.0.1")
    assert session.state is SessionState.ACTIVE
    with pytest.raises(SignInRefused):
        people.signin.password("dr.hansen", "wrong", "10.0.0.1")
    broken = tmp_path / "broken.toml"
    broken.write_text((tmp_path / "node.toml").read_text().replace(slapd.ldaps_url, "http://dc1.example"))
    with pytest.raises(ConfigError):
        build_people(load_config(broken), SigningIdentity.generate(), clock, events.append, tmp_path / "p2")
