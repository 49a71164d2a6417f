"""Baseline: the schema that rlhfkit's hand-written code created as schema_version 1.

Databases of that release are stamped with this revision and upgraded from here; new databases are
created from the models and stamped with the newest revision, so this step never runs on its own.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Never run: an empty database is created from the models, not replayed from the baseline."""
    raise RuntimeError("revision 0001 is a baseline: create new feedback databases with rlhfkit.feedback.store.open_store")
