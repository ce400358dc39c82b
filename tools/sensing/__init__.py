"""Gram-level load-cell scenario synthesis and detector evaluation (CPython only)."""
