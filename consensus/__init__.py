"""MFTP consensus package."""
