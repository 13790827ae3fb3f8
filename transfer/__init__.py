"""MFTP transfer package."""
