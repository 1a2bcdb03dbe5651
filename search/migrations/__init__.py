"""Alembic migration environment of the clipsearch store (run by :mod:`search.migrate`)."""
