"""Edit tasks: an annotator rewrites a response (schema_version 4).

Campaigns and tasks of kind ``edit`` store the rewrite in the annotation's JSON ``answer`` and
``resolved`` columns, so no table changes shape. The version still moves: a release of schema 3 would
read an edit answer as a good/bad label (its fallback kind) and export wrong records, so it must refuse
a store that may hold edits; it does, because it refuses any ``schema_version`` newer than its own.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Mark the store as one that may hold edit tasks (older releases then refuse it)."""
    op.execute("UPDATE schema_version SET version = 4 WHERE id = 1")
