"""A real OpenLDAP server (Debian's slapd) for tests: TLS on free loopback ports, stopped after.

The test makes a CA and a server certificate (for 127.0.0.1 and localhost) with
``cryptography``, writes a ``slapd.conf`` with an MDB database under a temporary folder,
loads the entries with ``slapadd`` before starting, and runs ``slapd -d 0`` in the foreground
as a child process, listening on ``ldap://`` (for StartTLS) and ``ldaps://``.  Debian's
``slapd`` and ``ldap-utils`` packages provide it; ``make test`` installs them.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.orthanc_server import free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SUFFIX = "dc=hospital,dc=example"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret-for-tests"  # slapd.conf takes no spaces here
SEARCH_DN = f"cn=mftp-search,ou=services,{SUFFIX}"
SEARCH_PASSWORD = "search account secret"


def slapd_available() -> bool:
    """Whether Debian's slapd is installed."""
    return Path(SLAPD).exists() and Path(SLAPADD).exists()


@dataclass(frozen=True)
class LdapServer:
    """Where a running test slapd answers, and the CA that signed its certificate."""

    ldap_port: int
    ldaps_port: int
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign the server's certificate

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_pki(folder: Path) -> tuple[Path, Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test directory CA"))
        .issuer_name(_name("test directory CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = (
        x509.CertificateBuilder()
        .subject_name(_name("some other CA"))
        .issuer_name(_name("some other CA"))
        .public_key(other_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[3].write_bytes(other.public_bytes(serialization.Encoding.PEM))
    return paths


def _people_ldif(people: dict[str, str]) -> str:
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Hospital\ndc: hospital\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SEARCH_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: mftp-search\n"
        f"sn: service\nuserPassword: {SEARCH_PASSWORD}\n",
    ]
    for uid, password in people.items():
        blocks.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
            f"sn: {uid}\nuserPassword: {password}\n"
        )
    return "\n".join(blocks)


def _config(folder: Path, pki: tuple[Path, Path, Path, Path]) -> Path:
    schema = Path("/etc/ldap/schema")
    conf = folder / "slapd.conf"
    conf.write_text(
        "\n".join(
            [
                *(f"include {schema / n}.schema" for n in ("core", "cosine", "inetorgperson", "nis")),
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {folder / 'slapd.pid'}",
                f"TLSCACertificateFile {pki[0]}",
                f"TLSCertificateFile {pki[1]}",
                f"TLSCertificateKeyFile {pki[2]}",
                "security simple_bind=128",  # no password travels in clear: TLS before any bind
                "database mdb",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ADMIN_DN}"',
                f"rootpw {ADMIN_PASSWORD}",
                f"directory {folder / 'db'}",
                "access to attrs=userPassword by anonymous auth by * none",
                "access to * by users read by * none",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return conf


@contextmanager
def run_slapd(folder: Path, people: dict[str, str]) -> Iterator[LdapServer]:
    """A slapd on free loopback ports holding ``people`` (uid -> password), for one block."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir()
    pki = _write_pki(folder)
    conf = _config(folder, pki)
    ldif = folder / "data.ldif"
    ldif.write_text(_people_ldif(people), encoding="utf-8")
    subprocess.run([SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True, timeout=60)
    ldap_port, ldaps_port = free_port(), free_port()
    urls = f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
    process = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", urls, "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"slapd exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", ldaps_port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("slapd did not start within 20 s") from None
                time.sleep(0.05)
        yield LdapServer(ldap_port, ldaps_port, pki[0], pki[3])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
