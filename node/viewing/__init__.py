"""Viewing: DICOMweb (QIDO-RS, WADO-RS) over the studies a caller may see, and the OHIF viewer.

- :mod:`.routes`: :class:`.routes.ViewingRoutes`, ``/dicom-web/...`` and ``/ohif/...``;
- :mod:`.catalog`: scopes (who sees which study), indexes, instances restored in memory,
  one access record per opening;
- :mod:`.index`: an instance's metadata and QIDO attributes, computed once, stored encrypted;
- :mod:`.qido`, :mod:`.dicomjson`, :mod:`.multipart`, :mod:`.frames`: the pure cores (matching,
  the DICOM JSON model, Accept and multipart, frames and renderings);
- :mod:`.ohif`: the prebuilt OHIF app under ``/ohif/``, with a generated configuration.

Imports the foundation, :mod:`mftp.node.api`, :mod:`mftp.node.people` and
:mod:`mftp.node.transfers`.
"""
