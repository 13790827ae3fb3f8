"""Outbound DICOMweb requests stay on their allow-list: no redirect is followed, no URL trick passes.

A hostile PACS on the allow-list answers 302 to another port (a stand-in for an unlisted host)
for QIDO-RS, WADO-RS and STOW-RS alike: the client must not make a single request there.  Base
URLs with dot segments (plain or percent-encoded), credentials, prefix look-alikes and the like
must be refused before any request is made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mftp.node.errors import NodeUsageError
from mftp.node.pacs import DicomWebSink, DicomWebSource, LocalFile, PacsError, describe_path
from mftp.node.transfers.sources import Allowed, check_destination, parse_source
from mftp.node.urls import normalise_url
from mftp.transfer.study import ImportReport

from .test_dicomweb_faults import STUDY, instance

HITS = web.AppKey("hits", list)


@dataclass
class Servers:
    """An allowed server that redirects everything, and the target it redirects to."""

    allowed: str  # base URL of the redirecting server
    target_hits: list[str] = field(default_factory=list)


async def _start(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    target = web.Application()
    target[HITS] = []

    async def anything(request: web.Request) -> web.Response:
        request.app[HITS].append(f"{request.method} {request.path}")
        return web.Response(status=200, text="[]", content_type="application/dicom+json")

    target.router.add_route("*", "/{tail:.*}", anything)
    target_runner, target_port = await _start(target)

    hostile = web.Application()

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        # "localhost" and another port: another origin than the allowed 127.0.0.1:<port>.
        location = f"http://localhost:{target_port}/internal{request.path_qs}"
        return web.Response(status=302, headers={"Location": location})

    hostile.router.add_route("*", "/{tail:.*}", redirect)
    hostile_runner, hostile_port = await _start(hostile)
    yield Servers(f"http://127.0.0.1:{hostile_port}/dicom-web", target[HITS])
    await hostile_runner.cleanup()
    await target_runner.cleanup()


async def test_qido_does_not_follow_a_redirect(servers: Servers) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PacsError, match=r"HTTP 302, a redirect to http://localhost:\d+\. Redirects"):
            await DicomWebSource(servers.allowed, session).find_studies(study_uid=STUDY)
    assert servers.target_hits == []


async def test_wado_does_not_follow_a_redirect(servers: Servers, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        source = DicomWebSource(servers.allowed, session)
        with pytest.raises(PacsError, match=r"WADO-RS: .*HTTP 302"):
            _ = [f async for f in source.fetch_study(STUDY, tmp_path, ImportReport())]
    assert servers.target_hits == []
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_stow_does_not_follow_any_redirect(servers: Servers, tmp_path: Path, status: int) -> None:
    path = tmp_path / "1.dcm"
    path.write_bytes(instance(STUDY, "1.2.3.4.5.1"))
    info, _ = describe_path(path, "1.dcm")
    async with aiohttp.ClientSession() as session:
        report = await DicomWebSink(servers.allowed, session).deliver([LocalFile(path, info)])
    assert report.ok == []
    assert [f.name for f in report.failures] == ["1.dcm"]
    assert "redirect" in report.failures[0].reason and "not followed" in report.failures[0].reason
    assert servers.target_hits == []


async def test_redirecting_server_cannot_be_reached_through_the_node_either(
    servers: Servers, tmp_path: Path
) -> None:
    # The same path the node takes: the allow-list check, then the client, for a send's source.
    from mftp.node.transfers.sources import import_study

    rules = Allowed((), (), ("http://127.0.0.1",))
    source = parse_source(f"dicomweb:{servers.allowed}#{STUDY}", rules)
    with pytest.raises(PacsError, match="redirect"):
        await import_study(source, tmp_path)
    assert servers.target_hits == []


RULES = Allowed((), (), ("http://127.0.0.1:8042/dicom-web", "https://pacs.example.org/dicom-web"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8042/dicom-web/../tools/execute",  # dot segments
        "http://127.0.0.1:8042/dicom-web/../../tools",
        "http://127.0.0.1:8042/dicom-web/./../tools",
        "http://127.0.0.1:8042/dicom-web/%2e%2e/tools",  # encoded dot segments
        "http://127.0.0.1:8042/dicom-web/%2E%2E/tools",
        "http://127.0.0.1:8042/dicom-web/.%2e/tools",
        "http://127.0.0.1:8042/dicom-web/%2e/studies",
        "http://127.0.0.1:8042/dicom-web/..",
        "http://127.0.0.1:8042/dicom-web/%2F..%2Ftools",  # encoded slash
        "http://127.0.0.1:8042/dicom-web/..%5Ctools",  # encoded backslash
        "http://127.0.0.1:8042/dicom-web\\..\\tools",  # backslash
        "http://127.0.0.1:8042/dicom-web//tools",  # empty segment
        "http://127.0.0.1:8042/dicom-web-evil",  # prefix tricks
        "http://127.0.0.1:8042/dicom-webs",
        "http://127.0.0.1:8042/dicom-we",
        "http://127.0.0.1:8042/DICOM-WEB",  # paths are case-sensitive
        "http://127.0.0.1:8042@evil.example/dicom-web",  # userinfo
        "http://user:pw@127.0.0.1:8042/dicom-web",
        "http://127.0.0.1:8042/dicom-web?x=../../tools",  # query and fragment
        "http://127.0.0.1:8042/dicom-web#frag",
        "http://127.0.0.1:80/dicom-web",  # another port (explicit default)
        "http://127.0.0.1/dicom-web",
        "http://127.0.0.1:8042.evil/dicom-web",
        "http://127.0.0.1:0/dicom-web",
        "https://127.0.0.1:8042/dicom-web",  # another scheme
        "ftp://127.0.0.1:8042/dicom-web",
        "http://127.0.0.1.evil.example:8042/dicom-web",
        "https://pacs.example.org.evil.net/dicom-web",
        "http://pacs.example.org/dicom-web",
        "https://pacs.example.org/dicom-web/%zz",  # a broken escape
        "https://pacs.example.org/dicom-web/ studies",
        "https://pacs.example.org/dicom-web/\u00e9",
        "https://pacs.example.org/dicom-web/studies\x00",
        "https://pacs.example.org/" + "a/" * 2000,
    ],
)
def test_url_tricks_are_refused(url: str) -> None:
    with pytest.raises(NodeUsageError, match=r"transfer\.dicomweb_urls|absolute folder path"):
        check_destination(url, RULES)
    if "#" not in url:  # "#" separates the study in a source
        with pytest.raises(NodeUsageError, match=r"transfer\.dicomweb_urls|dicomweb:"):
            parse_source(f"dicomweb:{url}#1.2.3", RULES)


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTP://127.0.0.1:8042/dicom-web", "http://127.0.0.1:8042/dicom-web"),
        ("http://127.0.0.1:8042/dicom-web/", "http://127.0.0.1:8042/dicom-web"),
        ("http://127.0.0.1:8042/dicom-web/studies", "http://127.0.0.1:8042/dicom-web/studies"),
        ("http://127.0.0.1:8042/%64icom-web", "http://127.0.0.1:8042/dicom-web"),  # escaped unreserved
        ("https://PACS.Example.ORG/dicom-web", "https://pacs.example.org/dicom-web"),  # host case
        ("https://pacs.example.org:443/dicom-web", "https://pacs.example.org/dicom-web"),  # default port
        ("https://pacs.example.org./dicom-web", "https://pacs.example.org/dicom-web"),  # trailing dot
    ],
)
def test_equivalent_spellings_are_allowed_and_normalised(url: str, normal: str) -> None:
    assert check_destination(url, RULES) == normal
    assert normalise_url(url).text == normal


def test_allowed_entries_are_normalised_too() -> None:
    rules = Allowed((), (), ("HTTPS://Pacs.Example.org:443/dicom-web/",))
    assert check_destination("https://pacs.example.org/dicom-web/studies", rules)
    # An entry that is itself a trick allows nothing.
    bad = Allowed((), (), ("http://127.0.0.1:8042/dicom-web/..",))
    with pytest.raises(NodeUsageError):
        check_destination("http://127.0.0.1:8042/tools", bad)
    with pytest.raises(NodeUsageError):
        check_destination("http://127.0.0.1:8042/dicom-web", bad)


def test_escaped_path_is_not_decoded_into_a_match() -> None:
    # %2D is "-", unreserved: /dicom%2Dweb is /dicom-web.  %2F would be "/" and is refused.
    assert check_destination("http://127.0.0.1:8042/dicom%2Dweb", RULES) == "http://127.0.0.1:8042/dicom-web"
    # Reserved escapes stay escaped (upper-cased), so they cannot forge a segment boundary.
    rules = Allowed((), (), ("http://127.0.0.1:8042/a",))
    assert check_destination("http://127.0.0.1:8042/a/b%3bc", rules) == "http://127.0.0.1:8042/a/b%3Bc"
    with pytest.raises(NodeUsageError):
        check_destination("http://127.0.0.1:8042/a%3B/x", rules)
