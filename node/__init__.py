"""MFTP node package."""
