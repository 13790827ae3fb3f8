"""MFTP crypto package."""
