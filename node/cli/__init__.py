"""``mftp-node``: the command line (entry point :func:`.main.main`).

- :mod:`.main`: the parser, ``init``, ``genesis``, ``run``, ``status``, ``devnet``;
- :mod:`.transfers`: ``send``, ``inbox``, ``export`` and the API client they share;
- :mod:`.view`: ``view``;
- :mod:`.audit`: ``audit ...``.

The CLI talks to a running node through its HTTP API; it may import anything of the node.
"""
