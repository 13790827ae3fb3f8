"""The OpenAPI 3 document of the node API (served at ``/openapi.json``).

The ledger, transfer, audit and people routes are described here (bodies from :mod:`.models`);
the other rooms describe their own routes (``openapi_paths()`` of their route providers), merged
in by :meth:`.server.Api.document`.  Tests validate the document and check that every route of
the node's application is described and vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from . import models
from .openapi_console import console_paths
from .openapi_people import people_paths

HEX = {"type": "string", "pattern": "^[0-9a-f]*$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = True
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


MAX_INT: Final = 2**63 - 1
"""The largest integer any parameter takes (heights and waits are far below it)."""


@dataclass(frozen=True)
class IntParam:
    """An integer parameter: the one source of its bounds, for the server's check and this document."""

    name: str
    where: str  # "path" or "query"
    description: str
    minimum: int = 0
    maximum: int = MAX_INT
    required: bool = False

    def spec(self) -> dict[str, Any]:
        """Its OpenAPI parameter object."""
        schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        return _param(self.name, self.where, self.description, schema, self.required or self.where == "path")


HEIGHT_PARAM: Final = IntParam("height", "path", "block height (1 is the first block)", minimum=1)
BLOCKS_FROM: Final = IntParam("from", "query", "first height (default: ten below the head)", minimum=1)
BLOCKS_TO: Final = IntParam("to", "query", "last height (default: the head; at most 100 blocks)", minimum=1)
WAIT_MS: Final = IntParam(
    "wait_ms",
    "query",
    "if block `from` is not committed yet, wait up to this long for it (a long poll: ask for "
    "`from = head + 1` to follow the chain without polling); larger values wait 30000, and a "
    "request is answered at once when 64 requests already wait",
)
PROOF_HEIGHT: Final = IntParam("height", "query", "ledger as of this height (default head)", minimum=1)
CONSISTENCY_FROM: Final = IntParam("from", "query", "older height", minimum=1, required=True)
CONSISTENCY_TO: Final = IntParam("to", "query", "newer height (default head)", minimum=1)
EXPORT_WAIT_MS: Final = IntParam(
    "wait_ms",
    "query",
    "wait up to this long for the export job to end before answering (larger values wait 30000); "
    "default 0: answer at once",
)

ERROR = _json(_ref("Error"), "error")
HEIGHT = HEIGHT_PARAM.spec()
RECORD_ID = _param(
    "record_id", "path", "record id, 32 hex digits", {"type": "string", "pattern": "^[0-9a-f]{32}$"}
)


def _get(summary: str, schema: dict[str, Any], params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _json(schema, "success"), "400": ERROR}}
    if params:
        op["parameters"] = params
        op["responses"]["404"] = ERROR
    return {"get": op}


TRANSFER_ID = _param(
    "transfer_id", "path", "transfer id, 32 hex digits", {"type": "string", "pattern": "^[0-9a-f]{32}$"}
)


JOB_ID = _param(
    "job_id", "path", "export job id, 32 hex digits", {"type": "string", "pattern": "^[0-9a-f]{32}$"}
)
VIEW_ID = _param(
    "view_id",
    "path",
    "view id from POST .../views, 32 hex digits",
    {"type": "string", "pattern": "^[0-9a-f]{32}$"},
)
INSTANCE_NAME = _param(
    "name",
    "path",
    "an instance name listed by the view (a relative path: percent-encode '/' as %2F)",
    {"type": "string"},
)


SIGNED_IN: Final[list[dict[str, list[str]]]] = [{"token": []}, {"session": []}]
"""An API token (``Authorization: Bearer``) or a browser session (cookie and ``X-CSRF-Token``)."""


def _token_op(summary: str, ok: dict[str, Any], ok_status: str = "200", **extra: Any) -> dict[str, Any]:
    responses = {ok_status: ok, "400": ERROR, "401": ERROR, **extra.pop("responses", {})}
    return {"summary": summary, "security": SIGNED_IN, "responses": responses, **extra}


def _transfer_paths() -> dict[str, Any]:
    """Sending, inbox and outbox, export (see :mod:`mftp.node.transfers`); every call needs the token."""
    return {
        "/transfers": {
            "post": _token_op(
                "Send a study to a member: residency check, then prepared and offered in the background",
                _json(_ref("TransferStarted"), "accepted; follow it with GET /transfers/{transfer_id}"),
                "202",
                requestBody=models.request_body(models.SendStudy),
                responses={"403": _json(_ref("Error"), "refused by data residency")},
            ),
            "get": _token_op(
                "Sent and received transfers with their states, newest first",
                _json(
                    {
                        "type": "object",
                        "properties": {"transfers": {"type": "array", "items": _ref("Transfer")}},
                    },
                    "success",
                ),
            ),
        },
        "/transfers/{transfer_id}": {
            "get": _token_op(
                "One transfer and its state",
                _json(_ref("Transfer"), "success"),
                parameters=[TRANSFER_ID],
                responses={"404": ERROR},
            )
        },
        "/transfers/{transfer_id}/cancel": {
            "post": _token_op(
                "Cancel a sent transfer not yet delivered (preparing, offered, accepted) or a received "
                "one still fetching: it becomes cancelled. A sent one is no longer served (the recipient "
                "gets 410 and ends its side); for a received one the sender is told (refused). 400 in "
                "any other state",
                _json(_ref("Transfer"), "cancelled"),
                parameters=[TRANSFER_ID],
                requestBody=models.request_body(models.Nothing),
                responses={"404": _json(_ref("Error"), "no such transfer")},
            )
        },
        "/transfers/{transfer_id}/resend": {
            "post": _token_op(
                "Send a sent transfer's source again (same recipient institution and user, purpose and "
                "mode) as the signed-in user: a new transfer. 400 if the transfer is still under way, "
                "was received, or its source is gone (the folder or the PACS's study); identified mode "
                "needs a fresh second factor",
                _json(_ref("TransferResent"), "accepted; follow the new transfer"),
                "202",
                parameters=[TRANSFER_ID],
                requestBody=models.request_body(models.Nothing),
                responses={"404": _json(_ref("Error"), "no such transfer")},
            )
        },
        "/transfers/{transfer_id}/export": {
            "post": _token_op(
                "Export a complete received study (folder, DICOMweb URL or dimse:AET@host:port) as a job: "
                "202 at once with the job to follow. The same request (transfer, destination, purpose, "
                "user) repeated while its job runs, or within an hour after it completed, returns that "
                "job (200 once done): no second export, no second STUDY_ACCESSED record. A failed job "
                "is not reused.",
                _json(_ref("ExportResult"), "the job is done (a repeat, or it ended within wait_ms)"),
                parameters=[TRANSFER_ID, EXPORT_WAIT_MS.spec()],
                requestBody=models.request_body(models.ExportStudy),
                responses={
                    "202": _json(
                        _ref("ExportResult"),
                        "accepted; follow it with GET /transfers/{transfer_id}/export/{job_id}",
                    ),
                    "502": _json(
                        _ref("Error"), "the job failed: a file did not verify or could not be delivered"
                    ),
                },
            )
        },
        "/transfers/{transfer_id}/export/{job_id}": {
            "get": _token_op(
                "An export job: state (queued, running, done, failed), progress (files_done of files), "
                "the STUDY_ACCESSED record once done, or the error and whose fault it is",
                _json(_ref("ExportResult"), "the job"),
                parameters=[TRANSFER_ID, JOB_ID],
                responses={"404": _json(_ref("Error"), "no such job (a restarted node forgets its jobs)")},
            )
        },
        **_view_paths(),
    }


def _view_paths() -> dict[str, Any]:
    """Views of a received study (see :mod:`mftp.node.transfers.access`); every call needs the token."""
    dicom = {
        "description": "the instance, restored and checked against the manifest (Cache-Control: no-store)",
        "content": {
            "application/dicom": {"schema": {"type": "string", "contentMediaType": "application/dicom"}}
        },
    }
    return {
        "/transfers/{transfer_id}/views": {
            "post": _token_op(
                "Open a complete received study in a viewer (records STUDY_ACCESSED, action view); the "
                "view expires (expires_ms) and is kept in memory only",
                _json(_ref("StudyView"), "opened"),
                "201",
                parameters=[TRANSFER_ID],
                requestBody=models.request_body(models.OpenView, required=False),
            )
        },
        "/transfers/{transfer_id}/views/{view_id}/instances/{name}": {
            "get": _token_op(
                "One instance of an open view (400 for an unknown or expired view, or an unknown name)",
                dicom,
                parameters=[TRANSFER_ID, VIEW_ID, INSTANCE_NAME],
                responses={"502": _json(_ref("Error"), "the stored instance did not verify")},
            )
        },
    }


def _audit_paths() -> dict[str, Any]:
    """Users, grants, scans and reports (see :mod:`mftp.node.audit.routes`); every call needs the token."""

    anything = {"type": "object"}
    return {
        "/audit/users": {
            "post": _token_op(
                "Register a user of this institution (so senders may name it as recipient user)",
                _json(anything, "registered"),
                requestBody=models.request_body(models.AuditUser),
            )
        },
        "/audit/grants": {
            "post": _token_op(
                "Sign an AUDIT_GRANT handing an auditor one party's epoch keys",
                _json(_ref("GrantMade"), "submitted"),
                "202",
                requestBody=models.request_body(models.Grant),
            )
        },
        "/audit/scans": {
            "post": _token_op(
                "Scan the verified chain for a grant's subject: matches, proofs, disclosed details",
                _json(_ref("AuditScan"), "the scan (or a FHIR Bundle / DICOM messages per format)"),
                requestBody=models.request_body(models.Scan),
            )
        },
        "/audit/rotations": {
            "post": _token_op(
                "Rotate a party's master key from next month, or erase the party (crypto-shredding)",
                _json({"type": "object", "properties": {"record": HEX}}, "KEY_ROTATION submitted"),
                "202",
                requestBody=models.request_body(models.Rotation),
            )
        },
        "/audit/reports": {
            "post": _token_op(
                "Scan, then sign and submit the AUDIT_REPORT record",
                _json(_ref("AuditScan"), "the scan with report_record"),
                "202",
                requestBody=models.request_body(models.Scan),
            )
        },
    }


def _paths() -> dict[str, Any]:
    any_object = {"type": "object", "additionalProperties": True}
    return {
        "/openapi.json": _get("This document", any_object),
        "/status": _get("Height, round, peers, role and sync state of this node", _ref("Status")),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: height, round, commit latency, mempool, rejected messages",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/validators": _get("Validators voting on the next block, and the audit nodes", any_object),
        "/peers": _get("Peers of this node", any_object),
        "/blocks": _get(
            "Blocks in a range of heights (at most 100 at a time)",
            any_object,
            [BLOCKS_FROM.spec(), BLOCKS_TO.spec(), WAIT_MS.spec()],
        ),
        "/blocks/{height}": _get(
            "One block with its records and commit certificate", _ref("Block"), [HEIGHT]
        ),
        "/blocks/{height}/records": _get("The records of one block", any_object, [HEIGHT]),
        "/records": {
            "post": {
                "summary": "Submit signed records to the mempool (requires an API token)",
                "security": SIGNED_IN,
                "requestBody": models.request_body(models.SubmitRecords),
                "responses": {
                    "202": _json(any_object, "accepted into the mempool (or already there)"),
                    "400": ERROR,
                    "401": ERROR,
                    "422": _json(any_object, "refused by the mempool, with the reason"),
                },
            }
        },
        "/records/{record_id}": _get("One record by id", _ref("Record"), [RECORD_ID]),
        "/proofs/inclusion/{record_id}": _get(
            "Inclusion proof of a record in the ledger at a height, with the certified header",
            any_object,
            [RECORD_ID, PROOF_HEIGHT.spec()],
        ),
        "/proofs/consistency": _get(
            "Consistency proof between the ledgers of two heights",
            any_object,
            [CONSISTENCY_FROM.spec(), CONSISTENCY_TO.spec()],
        ),
    }


_ERRORS: Final = {
    "400": "bad request: a parameter out of its documented bounds, a body that is not the documented "
    "JSON (or nested deeper than 32), or a request the node cannot do as asked",
    "401": "sign in first: no, an expired or an unknown session or API token, a bad CSRF token, a "
    "cross-site request, or a wrong name, password or code (never which)",
    "403": "signed in, but no role of the caller allows this, or it needs a second factor within "
    "the last minutes (step-up), or the body names another user than the signed-in one",
    "429": "too many failed attempts from this account or address: see Retry-After",
    "404": "no such item",
    "413": "body larger than api.max_request_bytes",
    "500": "this node's stored data is damaged (its operator must restore it), or an internal error",
    "502": "a peer, the PACS or a stored file misbehaved",
    "503": "this node does not run transfers",
}


def _with_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Every error status each operation can answer, added where its entry does not say more.

    The error middleware (:mod:`.server`) can answer 500 anywhere and 404 wherever a path names
    an item; parameters and bodies can be refused (400), bodies can be too large (413); calls with
    the token can be refused (401) and reach services that depend on peers or a PACS (502);
    transfer routes answer 503 on a node without transfers.  A method a path does not have is
    answered 405 with an ``Allow`` header (not an operation, so not listed per operation).
    """
    for path, item in paths.items():
        for op in item.values():
            codes = ["500"]
            if op.get("parameters") or "requestBody" in op:
                codes.append("400")
            if "requestBody" in op:
                codes.append("413")
            if "{" in path:
                codes.append("404")
            if "security" in op:
                codes += ["400", "401", "403", "429", "502"]
            elif op.get("x-sign-in"):  # the public steps of sign-in: wrong answers and their limit
                codes += ["401", "403", "429"]
            if path.startswith("/transfers"):
                codes.append("503")
            if path.startswith("/audit"):
                codes.append("404")  # a grant or record the ledger does not hold
            for code in codes:
                op["responses"].setdefault(code, _json(_ref("Error"), _ERRORS[code]))
    return paths


def operation(
    summary: str,
    answer: dict[str, Any] | None = None,
    status: str = "200",
    *,
    signed_in: bool = True,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    content_type: str = "application/json",
    sign_in_step: bool = False,
) -> dict[str, Any]:
    """One operation, for the rooms that document their own routes (``openapi_paths``).

    ``answer`` is the JSON schema of a success (``{"type": "object"}`` if omitted); another
    ``content_type`` (HTML, a ZIP, DICOM) is described as a string of that type.  ``body`` is
    the JSON schema of the request body.  The error statuses are added as for every route.
    """
    if content_type == "application/json":
        ok = _json(answer or {"type": "object"}, "success")
    else:
        ok = {"description": "success", "content": {content_type: {"schema": {"type": "string"}}}}
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok}}
    if signed_in:
        op["security"] = SIGNED_IN
    if sign_in_step:
        op["x-sign-in"] = True
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if parameters:
        op["parameters"] = parameters
    return op


def path_param(name: str, description: str) -> dict[str, Any]:
    """A string path parameter."""
    return _param(name, "path", description, {"type": "string"})


def openapi_document(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (with the paths the rooms' route providers document)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MFTP node API",
            "version": "1.0.0",
            "description": "Inspect the ledger of an MFTP node, sign in, and send, receive and audit "
            "studies. Ledger reads are open on the node's (loopback) address; everything else needs a "
            "signed-in session (cookie and X-CSRF-Token) or a personal API token, of a role the "
            "operation allows.",
        },
        "paths": _with_errors(
            {
                **_paths(),
                **_transfer_paths(),
                **_audit_paths(),
                **people_paths(),
                **console_paths(),
                **(extra_paths or {}),
            }
        ),
        "components": {
            "schemas": models.components(),
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "mftp_session"},
            },
        },
    }
