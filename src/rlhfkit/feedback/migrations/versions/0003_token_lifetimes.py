"""Tokens that can be revoked and expire, and server-side web sessions (schema_version 3).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Admin tokens: label, expiry, revocation; annotators: token expiry; the web_sessions table."""
    op.add_column("admin_tokens", sa.Column("label", sa.String(200), nullable=True))
    op.add_column("admin_tokens", sa.Column("expires_at", sa.DateTime(), nullable=True))
    op.add_column("admin_tokens", sa.Column("revoked_at", sa.DateTime(), nullable=True))
    op.add_column("annotators", sa.Column("token_expires_at", sa.DateTime(), nullable=True))
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("annotator_id", sa.Integer(), sa.ForeignKey("annotators.id"), nullable=True),
        sa.Column("admin_token_id", sa.Integer(), sa.ForeignKey("admin_tokens.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_web_sessions_annotator_id", "web_sessions", ["annotator_id"])
    op.create_index("ix_web_sessions_admin_token_id", "web_sessions", ["admin_token_id"])
    op.execute("UPDATE schema_version SET version = 3 WHERE id = 1")
