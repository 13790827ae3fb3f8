"""Auditing: the institution's encrypted vault of identities, pseudonym slots, grants and scans.

- :mod:`.vault`: the encrypted store of user and patient identities and record details;
- :mod:`.service`: the institution side (slots for senders, grants, disclosure of details);
- :mod:`.messages`: the ``a.*`` peer messages, decoded with limits;
- :mod:`.scan`: the auditor side (scans of the ledger with a grant, reports);
- :mod:`.routes`: the audit routes of the HTTP API.

Imports the foundation and :mod:`mftp.node.api` (for request parsing).
"""
