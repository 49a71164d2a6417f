"""Alembic migrations of the feedback store (``env.py`` and ``versions/``), run by ``store.upgrade_schema``."""
