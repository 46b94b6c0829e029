"""Utilities: atomic file writes, logging, hashing."""
