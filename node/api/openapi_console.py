"""The OpenAPI paths of the web console (issue 18): its pages, the overview, PACS search, history.

Merged into :mod:`.openapi` in one line; :func:`~.openapi._with_errors` adds the error statuses
every operation shares.  Schemas are inline: each is used once.
"""

from __future__ import annotations

from typing import Any, Final

from . import models

SIGNED_IN: Final[list[dict[str, list[str]]]] = [{"token": []}, {"session": []}]
HEX32: Final = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
KEY: Final = {"type": "string", "maxLength": 64}
ANY_OBJECT: Final = {"type": "object"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _page(summary: str, *, found: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}
    }
    if found:
        responses["302"] = {
            "description": "to the console",
            "headers": {"Location": {"schema": {"type": "string"}}},
        }
    return {"summary": summary, "responses": responses}


def console_paths() -> dict[str, Any]:
    """The console's pages and JSON routes."""
    studies = {
        "type": "object",
        "required": ["studies"],
        "properties": {"studies": {"type": "array", "maxItems": 500, "items": ANY_OBJECT}},
    }
    history = {
        "type": "object",
        "required": ["transfer_id", "records"],
        "properties": {
            "transfer_id": HEX32,
            "records": {
                "type": "array",
                "maxItems": 200,
                "description": "each record with its action, institution, user and purpose (when this "
                "institution's vault holds them), and whether its inclusion proof verified",
                "items": ANY_OBJECT,
            },
        },
    }
    page_name = _path("name", "a file of the console (e.g. inbox.html, app.js)", {"type": "string"})
    return {
        "/": {"get": _page("Redirect to the web console")},
        "/console": {"get": _page("Redirect to the web console")},
        "/console/": {"get": _page("The console's sign-in page", found=False)},
        "/console/{name}": {
            "get": {**_page("A page, script or style of the console", found=False), "parameters": [page_name]}
        },
        "/overview": {
            "get": {
                "summary": "The operator's overview: ledger height and last block time, this validator's "
                "participation, peers, sync, PACS reachability, free disk, queues, the figures of "
                "/metrics, and alerts",
                "security": SIGNED_IN,
                "responses": {"200": _json(ANY_OBJECT, "the overview")},
            }
        },
        "/pacs/sources": {
            "get": {
                "summary": "The PACS and folders a study may be sent from (transfer.dicomweb_urls, "
                "transfer.dimse_peers, transfer.source_dirs)",
                "security": SIGNED_IN,
                "responses": {"200": _json(ANY_OBJECT, "the sources")},
            }
        },
        "/pacs/search": {
            "post": {
                "summary": "Find studies on one source by exact keys: QIDO-RS, C-FIND, or the folders "
                "under a source folder",
                "security": SIGNED_IN,
                "requestBody": models.request_body(models.PacsSearch),
                "responses": {"200": _json(studies, "the studies found (at most 100; 500 folders)")},
            }
        },
        "/transfers/{transfer_id}/history": {
            "get": {
                "summary": "A transfer's records on the ledger (sent, received, opened, exported), each "
                "with its inclusion proof verified against a certified header",
                "security": SIGNED_IN,
                "parameters": [_path("transfer_id", "transfer id, 32 hex digits", HEX32)],
                "responses": {"200": _json(history, "the history")},
            }
        },
        "/audit/grants/received": {
            "get": {
                "summary": "The audit grants on the chain addressed to this node, opened: subject, scope, "
                "legal basis and expiry, newest first (at most 500)",
                "security": SIGNED_IN,
                "responses": {"200": _json(ANY_OBJECT, "the grants")},
            }
        },
        "/audit/bundles": {
            "post": {
                "summary": "Scan for a grant; the scan signed by this audit node with the records, "
                "the certified header and the genesis set: `mftp-node audit verify` checks it offline",
                "security": SIGNED_IN,
                "requestBody": models.request_body(models.Scan),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["content", "signature"],
                            "properties": {"content": ANY_OBJECT, "signature": {"type": "string"}},
                        },
                        "the signed bundle",
                    )
                },
            }
        },
        "/transfers/{transfer_id}/views/{view_id}/study": {
            "get": {
                "summary": "The Study Instance UID of an open view, to open it in the viewer",
                "security": SIGNED_IN,
                "parameters": [
                    _path("transfer_id", "transfer id, 32 hex digits", HEX32),
                    _path("view_id", "view id from POST .../views", HEX32),
                ],
                "responses": {"200": _json(ANY_OBJECT, "the study's UID")},
            }
        },
    }
