"""People (issue 16): who uses this node, how they prove it, and what each may do.

The pure core and the storage of accounts, sign-in and sessions; nothing here speaks HTTP or
reads the command line (the API routes and ``mftp-node user ...`` come in a later step).

- :mod:`.errors`: the refusals (sign-in, session, role, step-up, rate), each with its API status;
- :mod:`.accounts`: the encrypted account store (0700 folder, 0600 file) and Argon2id passwords;
- :mod:`.second_factor`: TOTP (drift, replay), recovery codes, the operator's one-time enrolment code;
- :mod:`.passkeys`: WebAuthn registration and authentication ceremonies (py_webauthn), challenges;
- :mod:`.sessions`: the session lifecycle (idle, absolute, step-up, CSRF) and hashed API tokens;
- :mod:`.abuse`: failure limits per name and per address, lockout, wrong API tokens;
- :mod:`.roles`: the roles (clinician, operator, auditor), the permission table and the
  ``requires`` metadata a route table states;
- :mod:`.events`: security events and their export as FHIR AuditEvent and DICOM audit messages;
- :mod:`.signin`: sign-in (password, then second factor), enrolment, the principal of a request,
  authorisation against a route's rule, and the ledger's user of a request;
- :mod:`.ldap`: a hospital directory (LDAP bind after a DN search, TLS only) as the password factor;
- :mod:`.admin`: the operator's actions on accounts and tokens, each reported as an event;

Imports only the foundation (``errors``, ``clock``, ``lifecycle``) and the cores, so that the
API, the audit and the transfer rooms can all import it later without a cycle.  The account
store derives its own key from the node's identity, as the audit vault does, rather than
importing the vault.
"""
