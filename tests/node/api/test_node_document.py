"""The node's whole API, as ``mftp-node run`` assembles it: every route documented, every rule stated.

The other API tests build the application from a few providers; this one builds a real
:class:`~mftp.node.process.Node` (LevelDB, vault, every room) without starting it, and walks the
application ``Node.api()`` serves, so a room's route that its ``openapi_paths`` forgot fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from mftp.crypto.keyfile import load_identity
from mftp.ledger.genesis import Genesis
from mftp.node.config import load_config
from mftp.node.devnet.consortium import create_devnet
from mftp.node.people.roles import unstated
from mftp.node.process import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    member = create_devnet(tmp_path / "devnet", validators=2, audit=0)[0]
    identity = load_identity(member.directory / "keys" / "node.key")
    node = Node(load_config(member.config_path), identity, Genesis.load(member.directory / "genesis.json"))
    yield node
    node.ledger.close()


def test_every_route_of_the_node_is_documented_and_states_its_rule(node: Node) -> None:
    api = node.api()
    app: web.Application = api.app()
    routes = [(r.method, r.resource.canonical, r.handler) for r in app.router.routes() if r.method != "HEAD"]
    assert unstated(routes) == []
    document = api.document()
    validate(document)
    served = {(method.lower(), path) for method, path, _ in routes}
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert served == documented, (served - documented, documented - served)
    for path in ("/session", "/shares", "/membership/proposals", "/audit/scans", "/transfers"):
        assert path in document["paths"]
