"""The node's HTTP API (aiohttp): one room for routes, error mapping and JSON views.

- :mod:`.server`: the application, its routes, authentication, and the mapping of errors
  to HTTP statuses (see :mod:`mftp.node.errors`);
- :mod:`.openapi`: the OpenAPI 3.1 document served at ``/openapi.json``;
- :mod:`.ledger_json`: JSON views of blocks, records and certificates.

Imports only the node's foundation (errors, config); services plug their routes in through
:class:`.server.RouteProvider` and their data through the protocols in :mod:`.server`.
"""
