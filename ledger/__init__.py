"""MFTP ledger package."""
