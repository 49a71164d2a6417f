"""Record whether an annotation came from the web pages or the JSON API (schema_version 2).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``annotations.source`` (existing rows: "api")."""
    op.add_column("annotations", sa.Column("source", sa.String(16), nullable=False, server_default="api"))
    op.execute("UPDATE schema_version SET version = 2 WHERE id = 1")
