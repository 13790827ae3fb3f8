"""A real Orthanc PACS for tests: started on free loopback ports, stopped after.

Orthanc 1.10 listens on all interfaces (it has no bind option), so it runs with
``RemoteAccessAllowed: false`` and authentication off, on random free ports, with
a private storage folder.  Debian's ``orthanc`` and ``orthanc-dicomweb``
packages provide it; ``make test`` installs them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins"]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class OrthancServer:
    """Where a running test Orthanc answers."""

    http_port: int
    dicom_port: int
    aet: str
    storage: Path

    @property
    def url(self) -> str:
        """REST base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb base URL (QIDO-RS, WADO-RS, STOW-RS)."""
        return f"{self.url}/dicom-web"

    def upload(self, data: bytes) -> dict[str, str]:
        """Store one DICOM file through the REST API."""
        request = urllib.request.Request(f"{self.url}/instances", data=data, method="POST")
        request.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def get_json(self, path: str) -> object:
        """GET a REST resource as JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.loads(response.read())


def orthanc_available() -> bool:
    """Whether the Orthanc binary is installed."""
    return Path(ORTHANC_BINARY).exists()


@contextmanager
def run_orthanc(
    workdir: Path, modalities: dict[str, tuple[str, str, int]] | None = None
) -> Iterator[OrthancServer]:
    """Start Orthanc in ``workdir``; ``modalities`` maps a name to (AET, host, port) for C-MOVE targets."""
    http_port, dicom_port = free_port(), free_port()
    storage = workdir / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    plugins = [d for d in PLUGIN_DIRS if Path(d).is_dir()]
    config = {
        "Name": "MFTP-TEST",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": plugins,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        "DicomModalities": {name: list(v) for name, v in (modalities or {}).items()},
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomCheckModalityHost": False,
        "UnknownSopClassAccepted": True,
        "StableAge": 1,
        "HttpTimeout": 60,
        "OverwriteInstances": True,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC_BINARY, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{http_port}/system", process)
        yield OrthancServer(http_port, dicom_port, "ORTHANC", storage)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("Orthanc did not become ready")
