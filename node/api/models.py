"""The API's request and response bodies as typed models (msgspec), the one source of their shape.

Handlers decode every JSON request body into its model (:func:`decode_body`): a missing or
unknown field, a wrong type or a value out of bounds is a 400 naming the field, in one pass
over the bounded bytes.  The OpenAPI document (:mod:`.openapi`) takes its request and response
schemas from these same classes (:func:`components`), so the document and the code cannot
drift; tests validate real answers against it.

Why msgspec rather than pydantic: it decodes and validates straight from the request's bytes
in C (no intermediate dict), forbids unknown fields per class, emits JSON Schema 2020-12 (what
OpenAPI 3.1 uses) with components and ``$ref`` names we choose, and is one small dependency
with none of its own.  Pydantic would do the same job with a larger runtime and more magic
(coercions we would have to turn off one by one).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct, field

Hex = Annotated[str, Meta(pattern="^[0-9a-f]*$", description="lower-case hex")]
Text = Annotated[str, Meta(max_length=1024)]
Name = Annotated[str, Meta(min_length=1, max_length=64, description="an account name")]
RoleName = Literal["clinician", "operator", "auditor"]
Roles = Annotated[list[RoleName], Meta(min_length=1, max_length=3)]
Fault = Literal["", "caller", "input", "storage", "node"]


class Body(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A request body: unknown fields are refused, absent optional ones take their default."""


# ----------------------------------------------------------------------------- requests


class SubmitRecords(Body):
    """``{"record": b64}`` or ``{"records": [b64, ...]}``: canonical record encodings."""

    record: str | None = None
    records: Annotated[list[str], Meta(max_length=1000)] | None = None


class SendStudy(Body):
    """Send a study; the sender is the signed-in user."""

    source: Annotated[
        Text, Meta(description="a folder or file on the node's host, dicomweb:... or dimse:...")
    ]
    to: Annotated[Text, Meta(description="the recipient member's name")]
    purpose: Annotated[Text, Meta(description="HL7 PurposeOfUse code, e.g. TREAT")]
    mode: Annotated[Text, Meta(description="identified | pseudonymised | deidentified | anonymous")]
    to_user: Annotated[Text, Meta(description="the recipient user, registered at the recipient")] = ""
    burned_in: (
        Annotated[Text, Meta(description="clean | refuse (default: the node's transfer.burned_in)")] | None
    ) = None
    user: Annotated[Text, Meta(description="optional; refused unless it names the signed-in user")] | None = (
        None
    )


class ExportStudy(Body):
    """Export a received study for the signed-in user."""

    destination: Annotated[
        Text,
        Meta(
            description="a folder on the node's host, a DICOMweb base URL (STOW-RS) or "
            "dimse:<AET>@<host>:<port> (C-STORE), on the node's allow-lists"
        ),
    ]
    purpose: Annotated[Text, Meta(description="default: the offer's")] | None = None
    user: Annotated[Text, Meta(description="optional; refused unless it names the signed-in user")] | None = (
        None
    )


class OpenView(Body):
    """Open a received study in a viewer for the signed-in user."""

    purpose: Annotated[Text, Meta(description="HL7 PurposeOfUse code (default: the offer's)")] | None = None
    user: Annotated[Text, Meta(description="optional; refused unless it names the signed-in user")] | None = (
        None
    )


class SignIn(Body):
    """The first step of sign-in."""

    name: Text
    password: Text


class SecondFactor(Body):
    """The second step (or a step-up): a TOTP code or a recovery code."""

    code: Text | None = None
    recovery_code: Text | None = None


class Credential(Body):
    """A WebAuthn credential as the browser returned it (JSON text)."""

    credential: Annotated[str, Meta(max_length=16_384)]


class Enrol(Body):
    """Enrolment from the operator's one-time code."""

    name: Text
    code: Text
    password: Text


class Code(Body):
    """A code (confirming a TOTP secret)."""

    code: Text


class MakeToken(Body):
    """A personal API token (or a service account's)."""

    role: RoleName
    ttl_s: Annotated[int, Meta(ge=60, le=366 * 24 * 3600)] = 90 * 24 * 3600
    label: Annotated[str, Meta(max_length=100)] = ""
    owner: Text = ""


class AddUser(Body):
    """A new account."""

    name: Text
    roles: Roles
    service: bool = False
    directory: bool = False


class SetRoles(Body):
    """An account's new roles."""

    roles: Roles


class Nothing(Body):
    """A call that takes no body (an empty object, or no body at all)."""


class AuditUser(Body):
    """Register a user of this institution."""

    user: Annotated[Text, Meta(description="a user name or user:<id>")]


class Grant(Body):
    """Sign an audit grant for one of our parties."""

    subject: Annotated[Text, Meta(description="user:<id>, patient:<id> or institution:<name>")]
    auditor: Annotated[Text, Meta(description="the auditor member's name (or sign key in hex)")]
    legal_basis: Text
    purpose: Annotated[Text, Meta(description="HL7 PurposeOfUse code, e.g. HCOMPL")]
    from_: Annotated[Text, Meta(description="first month granted, YYYY-MM")] = field(name="from")
    to: Annotated[Text, Meta(description="last month granted, YYYY-MM")]
    expires: Annotated[Text, Meta(description="YYYY-MM-DD (UTC) after which the grant is void")]
    notify_after: (
        Annotated[Text, Meta(description="YYYY-MM-DD before which the subject is not told")] | None
    ) = None


class Scan(Body):
    """Scan (or report) under a grant."""

    grant_id: Annotated[Text, Meta(description="the grant's record id (32 hex)")]
    format: Literal["json", "fhir", "dicom"] = "json"


class Rotation(Body):
    """Rotate a party's master key, or erase the party."""

    party: Annotated[Text, Meta(description="user:<id>, patient:<id> ...")]
    reason: Literal["scheduled", "compromise", "erasure"]


SearchKey = Annotated[str, Meta(max_length=64, description="an exact key (no wildcards)")]


class PacsSearch(Body):
    """Find studies on one source of this node by exact keys."""

    source: Annotated[
        Text,
        Meta(description="dicomweb:URL, dimse:AET@host:port or folder:PATH, as GET /pacs/sources lists them"),
    ]
    patient_id: SearchKey = ""
    accession: SearchKey = ""
    study_uid: SearchKey = ""


REQUESTS: Final = (
    PacsSearch,
    SubmitRecords,
    SendStudy,
    ExportStudy,
    OpenView,
    SignIn,
    SecondFactor,
    Credential,
    Enrol,
    Code,
    MakeToken,
    AddUser,
    SetRoles,
    Nothing,
    AuditUser,
    Grant,
    Scan,
    Rotation,
)


# ---------------------------------------------------------------------------- responses


class Answer(Struct, omit_defaults=True):
    """A response body (documented; the handlers' dicts are validated against it in tests)."""


class Error(Answer):
    """Every error answer: what went wrong and, by its status, whose fault."""

    error: str


class TransferStarted(Answer):
    """A send was accepted: follow it with ``GET /transfers/{transfer_id}``."""

    transfer_id: Hex


class TransferResent(Answer):
    """A resend was accepted: a new transfer of the same source (``resent_from``)."""

    transfer_id: Hex
    resent_from: Hex


TransferState = Literal[
    "preparing",
    "offered",
    "accepted",
    "delivered",
    "refused",
    "fetching",
    "verifying",
    "complete",
    "failed",
    "cancelled",
]


class Transfer(Answer):
    """One transfer as this node sees it (sent: out; received: in)."""

    transfer_id: Hex
    direction: Literal["out", "in"]
    peer: str
    state: TransferState
    peer_key: Hex = ""
    purpose: str = ""
    mode: str = ""
    detail: str = ""
    created_ms: int = 0
    files: int = 0
    files_done: int = 0
    study_bytes: int = 0
    fetch_bytes: int = 0
    fetched_bytes: int = 0
    data_url: str = ""
    offer_record: Hex = ""
    received_record: Hex = ""
    access_records: list[Hex] = []
    user: str = ""
    to_user: str = ""
    fault: Annotated[
        Fault, Meta(description="when failed, whose fault: caller = the node refused the study")
    ] = ""


class ExportResult(Answer):
    """An export job: its state, progress, record, or error and whose fault it is."""

    job_id: Hex
    transfer_id: Hex
    state: Literal["queued", "running", "done", "failed"]
    files: int
    files_done: int
    record: Hex
    phase: Literal["queued", "restoring", "delivering", "recording", "finished"] = "queued"
    error: str = ""
    fault: Fault = ""
    created_ms: int = 0


class ViewInstance(Answer):
    """One instance a view lists."""

    name: str
    size: int


class StudyView(Answer):
    """An open view of a received study (kept in memory, expiring)."""

    view_id: Hex
    transfer_id: Hex
    expires_ms: int
    expires_in_s: int
    record: Hex
    instances: list[ViewInstance]


class SignInStarted(Answer):
    """The password was right: give the second factor (echo the CSRF token)."""

    state: str
    csrf_token: str


class Session(Answer):
    """The signed-in session (or a token's caller)."""

    state: str
    name: str
    roles: list[str]
    csrf_token: str = ""
    step_up_fresh_s: Annotated[float | None, Meta(description="seconds left of the step-up")] = None


class EnrolmentStarted(Answer):
    """The TOTP secret, shown once (as a URI and a QR code in SVG)."""

    totp_uri: str
    totp_qr_svg: str
    csrf_token: str


class RecoveryCodes(Answer):
    """The 10 recovery codes, shown once."""

    recovery_codes: Annotated[list[str], Meta(min_length=10, max_length=10)]


class TokenView(Answer):
    """An API token without its secret."""

    token_id: str
    owner: str
    role: RoleName
    label: str
    created_ms: int
    expires_ms: int
    revoked_ms: int
    live: bool


class Tokens(Answer):
    """A list of tokens."""

    tokens: list[TokenView]


class TokenCreated(Answer):
    """A new token: its secret, shown once."""

    token: str
    token_id: str
    role: RoleName
    expires_ms: int


class UserView(Answer):
    """An account without secrets."""

    name: str
    roles: list[str]
    service: bool
    directory: bool
    disabled: bool
    locked: bool
    second_factor: bool
    enrolment_pending: bool


class Users(Answer):
    """Every account of this node."""

    users: list[UserView]


class UserAdded(Answer):
    """An account (and its one-time enrolment code, when one was issued)."""

    name: str = ""
    enrolment_code: str | None = None
    roles: list[str] = []


class GrantMade(Answer):
    """An audit grant was submitted."""

    grant_id: Hex


class AuditScan(Answer):
    """A scan under a grant: every match with its proof and disclosed details."""

    grant_id: Hex
    ledger_size: int
    ledger_root: Hex
    height: int
    statement: str
    matches: list[dict[str, Any]]
    institution: str = ""
    subject_kind: str = ""
    subject: str = ""
    match_count: int = 0
    matches_root: Hex = ""
    accounting: list[dict[str, Any]] = []
    notes: list[str] = []
    report_record: Hex = ""


class Status(Answer):
    """Height, round, peers, role and sync state of this node."""

    name: str
    role: Literal["validator", "audit"]
    chain_id: str
    height: int
    peers: int
    sync: dict[str, Any]
    round: int = 0
    ledger_size: int = 0
    head_hash: Hex = ""
    mempool_records: int = 0


class Signature(Answer):
    """One validator's signature in a certificate."""

    validator: Hex
    signature: Hex


class Certificate(Answer):
    """The commit certificate of a block."""

    height: int
    round: int
    block_hash: Hex
    signatures: list[Signature]


class Record(Answer):
    """One record, and where it is in the chain once committed."""

    id: Hex
    type: str
    time_ms: int
    author: Hex
    tags: list[Hex]
    body: dict[str, Any]
    signature: Hex
    schema: int = 0
    envelope_bytes: int = 0
    commitments: dict[str, Hex] = {}
    hash: Hex = ""
    height: int = 0
    index_in_block: int = 0
    ledger_index: int = 0


class Block(Answer):
    """One block: its header, record ids (and records), and certificates."""

    height: int
    header: Annotated[
        dict[str, Any], Meta(description="the block header's fields, hex for bytes, and its hash")
    ]
    record_ids: list[Hex]
    records: list[Record] | None = None
    last_commit: Certificate | None = None
    certificate: Certificate | None = None


RESPONSES: Final = (
    Block,
    Error,
    TransferStarted,
    TransferResent,
    Transfer,
    ExportResult,
    StudyView,
    SignInStarted,
    Session,
    EnrolmentStarted,
    RecoveryCodes,
    Tokens,
    TokenCreated,
    Users,
    UserAdded,
    GrantMade,
    AuditScan,
    Status,
    Certificate,
    Record,
)


def components() -> dict[str, Any]:
    """The JSON Schemas of every model, by class name (OpenAPI ``components.schemas``)."""
    _, schemas = msgspec.json.schema_components(
        (*REQUESTS, *RESPONSES), ref_template="#/components/schemas/{name}"
    )
    return schemas


def ref(model: type[Struct]) -> dict[str, str]:
    """A ``$ref`` to ``model``'s schema."""
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def request_body(model: type[Body], required: bool = True) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` of ``model``."""
    return {"required": required, "content": {"application/json": {"schema": ref(model)}}}


def decode(data: bytes, model: type[Body]) -> Any:
    """``data`` as ``model``; a 400 naming the field otherwise (an empty body is ``{}``)."""
    try:
        return msgspec.json.decode(data.strip() or b"{}", type=model)
    except msgspec.ValidationError as exc:
        raise web.HTTPBadRequest(text=f"the body does not fit {model.__name__}: {exc}") from None
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
