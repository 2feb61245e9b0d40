"""Sparse offset and time indexes over a segment's ``.log``."""
