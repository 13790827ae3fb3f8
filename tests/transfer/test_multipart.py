"""Streaming multipart/related: parse what DICOMweb servers send, build what they accept."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.transfer.errors import TransferInputError, TransferUsageError
from mftp.transfer.multipart import (
    MultipartLimits,
    MultipartParser,
    PartData,
    PartEnd,
    PartEvent,
    PartStart,
    boundary_of,
    closing_delimiter,
    encode_multipart,
    multipart_content_type,
    new_boundary,
    parse_content_type,
    part_head,
)

# Orthanc 1.10 sends boundaries of 72 characters, above RFC 2046's 70.
ORTHANC_BOUNDARY = "b07d4c66-8fd5-4297-ba2b-00a4534b3d20-0a430185-a34d-4146-8ffc-14f51f7d6"


def build(boundary: str, parts: list[bytes], content_type: str = "application/dicom") -> bytes:
    return b"".join(encode_multipart(boundary, [(content_type, [p]) for p in parts]))


def parse_all(
    body: bytes, boundary: str, chunk: int = 7, limits: MultipartLimits | None = None
) -> tuple[list[dict[str, str]], list[bytes]]:
    """Feed ``body`` in chunks of ``chunk`` bytes; returns (headers, contents) per part."""
    parser = MultipartParser(boundary, limits)
    events: list[PartEvent] = []
    for i in range(0, len(body), chunk):
        events += parser.feed(body[i : i + chunk])
    parser.close()
    return collect(events)


def collect(events: list[PartEvent]) -> tuple[list[dict[str, str]], list[bytes]]:
    headers: list[dict[str, str]] = []
    contents: list[bytes] = []
    for event in events:
        if isinstance(event, PartStart):
            headers.append(dict(event.headers))
            contents.append(b"")
        elif isinstance(event, PartData):
            assert event.index == len(contents)
            contents[-1] += event.data
        else:
            assert isinstance(event, PartEnd)
            assert event.size_bytes == len(contents[-1])
    return headers, contents


def test_orthanc_style_body_parses_in_any_chunking() -> None:
    content = [os.urandom(3000), b"", b"\r\n--" + b"x" * 10, os.urandom(5)]
    body = b""
    for c in content:
        body += (
            f"--{ORTHANC_BOUNDARY}\r\nContent-Type: application/dicom\r\nMIME-Version: 1.0\r\n\r\n".encode()
        )
        body += c + b"\r\n"
    body += f"--{ORTHANC_BOUNDARY}--\r\n".encode()
    for chunk in (1, 2, 3, 64, 1000, len(body)):
        headers, contents = parse_all(body, ORTHANC_BOUNDARY, chunk)
        assert contents == content
        assert headers[0] == {"content-type": "application/dicom", "mime-version": "1.0"}


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=300), max_size=5),
    chunk=st.integers(min_value=1, max_value=97),
    preamble=st.binary(max_size=40).filter(lambda b: b"--mftp" not in b),
)
def test_round_trip_with_any_content_and_chunking(parts: list[bytes], chunk: int, preamble: bytes) -> None:
    boundary = new_boundary()
    body = preamble + b"\r\n" + build(boundary, parts) + b"epilogue is ignored"
    headers, contents = parse_all(body, boundary, chunk)
    assert contents == parts
    assert all(h == {"content-type": "application/dicom"} for h in headers)


def test_part_without_headers_and_transport_padding() -> None:
    body = b"--B  \t\r\n\r\nabc\r\n--B\r\nX-A: 1\r\n\r\n\r\n--B--"
    headers, contents = parse_all(body, "B", chunk=2)
    assert headers == [{}, {"x-a": "1"}]
    assert contents == [b"abc", b""]


def test_memory_stays_at_one_chunk_for_a_large_part() -> None:
    """The parser hands content on as it goes: its buffer never grows with the part."""
    boundary = new_boundary()
    parser = MultipartParser(boundary)
    parser.feed(part_head(boundary, "application/dicom"))
    total = 0
    for _ in range(200):
        for event in parser.feed(b"\0" * 65536):
            if isinstance(event, PartData):
                total += len(event.data)
        assert len(parser._buf) < len(boundary) + 8
    events = parser.feed(b"\r\n" + closing_delimiter(boundary))
    parser.close()
    total += sum(len(e.data) for e in events if isinstance(e, PartData))
    assert total == 200 * 65536


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--B\r\nContent-Type: a\r\n\r\nabc", "ends early"),
        (b"no delimiter at all", "ends early"),
        (b"--B\r\nbroken header line\r\n\r\nabc\r\n--B--", "malformed multipart header"),
        (b"--B\r\n\r\nabc\r\n--Bxyz\r\n\r\n--B--", "malformed multipart delimiter"),
    ],
)
def test_malformed_bodies_are_input_errors(body: bytes, message: str) -> None:
    with pytest.raises(TransferInputError, match=message):
        parse_all(body, "B", chunk=5)


@pytest.mark.parametrize(
    ("limits", "body", "message"),
    [
        (MultipartLimits(max_parts=2), build("B", [b"a", b"b", b"c"]), "more than 2 parts"),
        (MultipartLimits(max_part_bytes=10), build("B", [b"x" * 11]), "larger than 10 bytes"),
        (
            MultipartLimits(max_header_bytes=20),
            b"--B\r\nX-Long: " + b"y" * 50 + b"\r\n\r\n",
            "headers longer",
        ),
        (MultipartLimits(max_headers=1), b"--B\r\nA: 1\r\nB: 2\r\n\r\n\r\n--B--", "more than 1 headers"),
        (MultipartLimits(max_preamble_bytes=10), b"z" * 100 + build("B", [b"a"]), "preamble longer"),
        (MultipartLimits(max_epilogue_bytes=10), build("B", [b"a"]) + b"e" * 100, "epilogue longer"),
    ],
)
def test_limits_bound_what_a_peer_can_send(limits: MultipartLimits, body: bytes, message: str) -> None:
    with pytest.raises(TransferInputError, match=message):
        parse_all(body, "B", chunk=16, limits=limits)


def test_header_flood_without_blank_line_is_refused_early() -> None:
    parser = MultipartParser("B", MultipartLimits(max_header_bytes=100))
    parser.feed(b"--B\r\n")
    with pytest.raises(TransferInputError, match="headers longer"):
        for _ in range(10):
            parser.feed(b"X: " + b"a" * 30 + b"\r\n")


def test_content_type_parsing() -> None:
    value = 'Multipart/Related; type="application/dicom"; boundary="a b\\"c"; transfer-syntax=*'
    media, params = parse_content_type(value)
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": 'a b"c', "transfer-syntax": "*"}
    assert boundary_of(f"multipart/related; type=application/dicom; boundary={ORTHANC_BOUNDARY}") == (
        ORTHANC_BOUNDARY
    )
    for bad in ("application/dicom", "multipart/related", "multipart/related; boundary=", 'a; b="open'):
        with pytest.raises(TransferInputError):
            boundary_of(bad)


def test_builder_output_and_misuse() -> None:
    boundary = new_boundary()
    assert (
        multipart_content_type(boundary)
        == f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    assert part_head(boundary, "application/dicom", {"Content-Location": "x"}) == (
        f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Location: x\r\n\r\n".encode()
    )
    with pytest.raises(TransferUsageError):
        part_head(boundary, "application/dicom", {"X": "a\r\nInjected: 1"})
    with pytest.raises(TransferUsageError):
        MultipartParser("")
    with pytest.raises(TransferUsageError):
        multipart_content_type("bad\nboundary")
