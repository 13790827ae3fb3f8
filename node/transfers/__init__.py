"""A study's journey: import, preparing, the offer, the recipient's fetch, access and export.

- :mod:`.service`: :class:`.service.TransferService`, sending and the ``t.*`` channels;
- :mod:`.receiver`: the recipient's side (checking offers, fetching, receipts);
- :mod:`.access`: views and exports of received studies (each an access record);
- :mod:`.sources`: where a study comes from and goes to (folders, DICOMweb, DIMSE);
- :mod:`.preparing`: de-identifying, compressing, encrypting and verifying objects;
- :mod:`.dimse_and_attachments`: DIMSE sources and sinks, and case attachments;
- :mod:`.messages`: offers and receipts on the wire;
- :mod:`.state`: transfer state files and the transfer lifecycle table.

Imports the foundation, :mod:`mftp.node.dataplane`, :mod:`mftp.node.pacs` and
:mod:`mftp.node.audit`.
"""
