"""The MFTP node: the shell wiring the pure cores (ledger, consensus, transfer) to network, disk, clock.

Rooms (each subpackage's ``__init__`` has its own map):

======================  ===============================================================
``p2p/``                the libp2p peer network: frames, the trio host, the asyncio face
``chain/``              the consensus reactor: consensus channels, compact proposals, catch-up
``dataplane/``          encrypted objects on disk and the HTTPS plane that serves them
``pacs/``               PACS adapters: folders, DICOMweb, DIMSE (sources and sinks)
``transfers/``          a study's send and receipt: sources, preparing, offers, access, state
``people/``             accounts, roles, sign-in with a second factor, sessions, API tokens
``shares/``             sharing with the patient: link and code, download, who has seen
``audit/``              the institution's vault, pseudonym slots, disclosure, the auditor's scans
``api/``                the HTTP API: routes, errors, JSON views of ledger objects, OpenAPI
``cli/``                ``mftp-node`` and its subcommands
======================  ===============================================================

At the top: :mod:`.process` assembles and runs one node; :mod:`.config`, :mod:`.errors`,
:mod:`.clock`, :mod:`.lifecycle`, :mod:`.logs`, :mod:`.metrics`, :mod:`.private_files`,
:mod:`.ratelimit` and :mod:`.urls` are the foundation every room may use; the room
:mod:`.devnet` runs a whole consortium on loopback.

Who may import whom (``tests/test_import_direction.py`` keeps it so): the foundation imports only
the foundation; the leaves ``p2p``, ``pacs``, ``dataplane``, ``api`` and ``people`` import
only the foundation; ``chain`` also ``p2p``; ``audit`` also ``api``; ``transfers`` also ``dataplane``,
``pacs`` and ``audit``; ``process``, ``devnet`` and ``cli`` may import anything.  No cycle
between any two modules.
"""
