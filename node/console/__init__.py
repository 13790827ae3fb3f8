"""The web console (issue 18): pages for clinicians, operators and regulators, served by the node.

- :mod:`.pages`: :class:`.pages.ConsolePages`, the static pages under ``/console/`` (``/``
  redirects there) with a strict Content-Security-Policy (self only), ``X-Frame-Options: DENY``
  and ``Referrer-Policy: no-referrer``; the files live in ``static/`` (HTML, CSS, ES modules of
  our own: nothing is loaded from anywhere else);
- the operator's pages over existing routes: ``users.html`` (``/users``), ``tokens.html``
  (``/tokens``) and ``explorer.html`` (``/blocks``, ``/records``, ``/proofs/inclusion``,
  ``/validators``), whose ``proof.js`` checks an inclusion proof in the browser itself;
- :mod:`.overview`: :class:`.overview.OverviewApi`, ``GET /overview``: the operator's figures
  (the same as ``/metrics``) and the alerts they raise.

Every page reads the same JSON API as the CLI. Imports the foundation, :mod:`mftp.node.api`
and :mod:`mftp.node.people`.
"""
