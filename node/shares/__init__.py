"""Sharing with the patient (issue 19): a link and a code, the real images, every access on the ledger.

- :mod:`.core`: the pure core: the share lifecycle (a table), the link token and the short
  code, their keyed hashes, the limits on opens and wrong codes;
- :mod:`.store`: the encrypted share store (0700 folder, 0600 file, key from the node identity);
- :mod:`.bundle`: the download: a ZIP of the DICOM files and a DICOMDIR, made in memory;
- :mod:`.seen`: "who has seen my images": the ledger's records about the shared studies, proven;
- :mod:`.service`: create, open with the code, sessions, the viewing scope, download, revoke,
  and the ledger records (``PATIENT_SHARE``; ``STUDY_ACCESSED`` share-view / share-download);
- :mod:`.held`: the studies a share can hold, read through the transfers room;
- :mod:`.pages`: the patient's HTML pages, style and script (nothing from the internet);
- :mod:`.routes`: the clinician's API and the patient's pages, registered via ``add_routes``.

Imports the foundation and the rooms ``api`` (request parsing), ``people`` (principals, roles,
abuse limits, the sealed file), ``audit`` (records, patient party ids) and ``transfers``
(restoring a received study in memory).  Nothing imports this room but ``process`` and ``cli``.
The viewing room (issue 17) is joined to it through :meth:`.service.ShareService.scope`.
"""
