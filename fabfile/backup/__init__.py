"""Backups of the data stores: sets taken on the data host, listed, restored (see sets.py)."""
