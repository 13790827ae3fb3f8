"""Capabilities and request proofs (mftp.transfer.capability), with fixed test vectors."""

from __future__ import annotations

import dataclasses

import pytest

from mftp.crypto import canonical
from mftp.transfer.capability import (
    MAX_TTL_MS,
    AuthError,
    Capability,
    FetchRequest,
    ReplayCache,
    authorization_header,
    authorize,
    check_object,
    decode_capability,
    format_authorization,
    issue_capability,
    parse_authorization,
    proof_message,
)
from mftp.transfer.errors import TransferInputError, TransferUsageError
from tests.transfer.package_helpers import RECIPIENT, SENDER, STRANGER, TRANSFER_ID

NOW = 1_750_000_000_000
MANIFEST_SHA = bytes(range(100, 132))
OBJECT = bytes.fromhex("ab" * 32)
PATH = "/v1/objects/" + OBJECT.hex()
RANGE = "bytes=0-4194303"

# Ed25519 is deterministic: these fix the token layout and the signed proof message.
VECTOR_CAP_SHA256 = "4def422db55950dd8c5c29b12bfbf9c700fb53d5906cdbcaa13ec48182694147"
VECTOR_CAP_SIG = (
    "95b7f0a7767cd50818c857b08a678dbff37d4f634d99654ae125ee5f555542b8"
    "2ec25423093cc9b438f43c41bdab022221d29b741cd06be3cc15001c2d2b310e"
)
VECTOR_PROOF = "xIWHZXESLiI6T9xGyE8rpuFCWZeg7OOdcNmGcbzwUHfwk6OzXqS8864EGsqqCgX5amOML5NlKTHm66CCS9z-BA"


def _cap(**changes: int) -> Capability:
    return issue_capability(
        SENDER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=TRANSFER_ID,
        manifest_sha256=MANIFEST_SHA,
        now_ms=changes.get("now_ms", NOW),
        ttl_ms=changes.get("ttl_ms", 3_600_000),
    )


def _header(cap: Capability, *, ts: int = NOW + 1000, path: str = PATH, range_header: str = RANGE) -> str:
    return authorization_header(
        RECIPIENT, cap, method="GET", path=path, range_header=range_header, now_ms=ts, nonce=bytes(16)
    )


def _authorize(
    header: str | None, *, now: int = NOW + 1000, replay: ReplayCache | None = None, **kw: str
) -> Capability:
    return authorize(
        header,
        method=kw.get("method", "GET"),
        path=kw.get("path", PATH),
        range_header=kw.get("range_header", RANGE),
        server=SENDER.public,
        now_ms=now,
        replay=replay,
    )


def _refused(status: int, reason: str, header: str | None, **kw: object) -> None:
    with pytest.raises(AuthError) as info:
        _authorize(header, **kw)  # type: ignore[arg-type]
    assert (info.value.status, info.value.reason) == (status, reason), str(info.value)


def test_vectors() -> None:
    cap = _cap()
    assert cap.sha256.hex() == VECTOR_CAP_SHA256
    assert cap.signature.hex() == VECTOR_CAP_SIG
    assert cap.not_after_ms == NOW + 3_600_000
    header = _header(cap)
    assert header.endswith(f", ts={NOW + 1000}, nonce=AAAAAAAAAAAAAAAAAAAAAA, proof={VECTOR_PROOF}")
    assert decode_capability(cap.token) == cap
    assert len(header) < 1024


def test_a_good_request_is_authorized() -> None:
    cap = _cap()
    assert _authorize(_header(cap)) == cap
    # A fresh random nonce by default: two proofs for the same request differ.
    one = authorization_header(RECIPIENT, cap, method="GET", path=PATH, range_header=RANGE, now_ms=NOW)
    two = authorization_header(RECIPIENT, cap, method="GET", path=PATH, range_header=RANGE, now_ms=NOW)
    assert one != two


def test_expired_capability() -> None:
    cap = _cap(ttl_ms=1000)
    _authorize(_header(cap, ts=NOW + 1000), now=NOW + 1000)  # the last valid millisecond
    _refused(403, "expired", _header(cap, ts=NOW + 1001), now=NOW + 1001)


def test_proof_by_someone_else_than_the_recipient() -> None:
    cap = _cap()
    request = FetchRequest("GET", PATH, RANGE, NOW, bytes(16))
    proof = STRANGER.sign("capability", proof_message(cap.sha256, request))
    _refused(403, "bad-proof", format_authorization(cap.token, NOW, bytes(16), proof))
    with pytest.raises(TransferUsageError):  # and our own API will not even make one
        authorization_header(STRANGER, cap, method="GET", path=PATH, range_header=RANGE, now_ms=NOW)


def test_proof_binds_method_path_and_range() -> None:
    header = _header(_cap())
    _refused(403, "bad-proof", header, range_header="bytes=0-")
    _refused(403, "bad-proof", header, path="/v1/objects/" + "cd" * 32)
    _refused(403, "bad-proof", header, method="HEAD")


def test_object_not_in_the_transfer() -> None:
    cap = _authorize(_header(_cap()))
    check_object(cap, OBJECT, manifest_sha256=MANIFEST_SHA, objects={OBJECT})
    with pytest.raises(AuthError, match="not part") as info:
        check_object(cap, bytes(32), manifest_sha256=MANIFEST_SHA, objects={OBJECT})
    assert info.value.status == 403
    with pytest.raises(AuthError, match="does not serve"):
        check_object(cap, OBJECT, manifest_sha256=bytes(32), objects={OBJECT})
    with pytest.raises(AuthError, match="does not serve"):
        check_object(cap, OBJECT, manifest_sha256=None, objects=())


def test_old_and_future_timestamps() -> None:
    cap = _cap()
    _authorize(_header(cap, ts=NOW + 1000), now=NOW + 61_000)  # exactly at the skew limit
    _refused(403, "stale", _header(cap, ts=NOW + 1000), now=NOW + 61_001)
    _refused(403, "stale", _header(cap, ts=NOW + 70_000), now=NOW + 1000)


def test_replayed_request() -> None:
    cache = ReplayCache(window_ms=120_000)
    header = _header(_cap())
    _authorize(header, replay=cache)
    _refused(403, "replayed", header, replay=cache)
    assert len(cache) == 1


def test_replay_cache_forgets_old_entries_and_refuses_when_full() -> None:
    cache = ReplayCache(window_ms=1000, max_entries=2)
    cache.check_and_add(b"a", 0)
    cache.check_and_add(b"b", 500)
    with pytest.raises(AuthError) as info:
        cache.check_and_add(b"c", 900)
    assert info.value.status == 503
    cache.check_and_add(b"c", 1200)  # "a" fell out of the window
    assert len(cache) == 2
    cache.check_and_add(b"a", 1600)  # and may come again: its timestamp is refused anyway


def test_forged_capabilities() -> None:
    cap = _cap()
    # A longer lifetime with the old signature.
    longer = dataclasses.replace(cap, not_after_ms=cap.not_after_ms + 10**6)
    _refused(403, "bad-signature", _header(longer))
    # A lifetime beyond what issue_capability ever grants is refused before any signature check.
    endless = dataclasses.replace(cap, not_after_ms=cap.issued_ms + MAX_TTL_MS + 1)
    _refused(401, "malformed", _header(endless))
    # A stranger's own capability naming the server as sender.
    body = {**cap.body(), "recipient": STRANGER.public.sign_key}
    forged_sig = STRANGER.sign("capability", canonical.encode(body))
    forged = dataclasses.replace(cap, recipient=STRANGER.public.sign_key, signature=forged_sig)
    request = FetchRequest("GET", PATH, RANGE, NOW + 1000, bytes(16))
    proof = STRANGER.sign("capability", proof_message(forged.sha256, request))
    _refused(403, "bad-signature", format_authorization(forged.token, NOW + 1000, bytes(16), proof))
    # A capability issued by another node (properly signed by it).
    other = issue_capability(
        STRANGER,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=TRANSFER_ID,
        manifest_sha256=MANIFEST_SHA,
        now_ms=NOW,
    )
    _refused(403, "wrong-issuer", _header(other))


def test_a_proof_is_not_a_capability() -> None:
    """Both use the 'capability' domain; the type field keeps them apart."""
    request = FetchRequest("GET", PATH, RANGE, NOW, bytes(16))
    message = proof_message(bytes(32), request)
    token = canonical.encode({"cap": canonical.decode(message), "sig": RECIPIENT.sign("capability", message)})
    with pytest.raises(TransferInputError):
        decode_capability(token)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "MFTP-Cap cap=AA",
        "MFTP-Cap cap=AA, ts=1, nonce=AA, proof=AA, proof=AA",
        "MFTP-Cap cap=AA, ts=x1, nonce=AAAAAAAAAAAAAAAAAAAAAA, proof=" + "A" * 86,
        "MFTP-Cap cap=AA, ts=01, nonce=AAAAAAAAAAAAAAAAAAAAAA, proof=" + "A" * 86,
        "MFTP-Cap cap=A+, ts=1, nonce=AAAAAAAAAAAAAAAAAAAAAA, proof=" + "A" * 86,
        "MFTP-Cap cap=AA, ts=1, nonce=AAAA, proof=" + "A" * 86,
        "MFTP-Cap cap=AA, ts=1, nonce=AAAAAAAAAAAAAAAAAAAAAA, proof=" + "A" * 86,  # cap is not a token
        "MFTP-Cap cap=" + "A" * 3000,
    ],
)
def test_malformed_headers_are_401(header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        _authorize(header)
    assert info.value.status == 401


def test_parse_round_trip() -> None:
    cap = _cap()
    token, ts, nonce, proof = parse_authorization(_header(cap))
    assert (token, ts, nonce) == (cap.token, NOW + 1000, bytes(16))
    assert len(proof) == 64


def test_decode_capability_refuses_malformed_tokens() -> None:
    cap = _cap()
    body = cap.body()
    for bad in (
        {**body, "v": 2},
        {**body, "extra": 1},
        {**body, "sender": b"short"},
        {**body, "issued_ms": True},
        {**body, "type": "mftp-fetch-proof"},
    ):
        with pytest.raises(TransferInputError):
            decode_capability(canonical.encode({"cap": bad, "sig": cap.signature}))
    with pytest.raises(TransferInputError):
        decode_capability(canonical.encode({"cap": body, "sig": b"x"}))
    with pytest.raises(TransferInputError):
        decode_capability(b"\xff" * 2000)


def test_issue_refuses_misuse() -> None:
    with pytest.raises(TransferUsageError):
        issue_capability(SENDER, recipient=SENDER.public.sign_key, transfer_id=TRANSFER_ID,
                         manifest_sha256=MANIFEST_SHA, now_ms=NOW)  # fmt: skip
    with pytest.raises(TransferUsageError):
        _cap(ttl_ms=8 * 24 * 3600 * 1000)
