"""Create or upgrade the feedback database's schema with Alembic, once per open, safely under concurrency.

An empty database is created from the models and stamped with the newest revision; a database of an
older release (``schema_version`` 1 or 2, from before Alembic) is stamped with the matching revision
and upgraded; a database already at the newest revision costs two small queries and never imports
Alembic, so a restarted server answers as fast as before. The whole step runs in one transaction that
holds the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two
processes opening the same database at once upgrade it once. ``schema_version`` is kept in step, so
older releases still refuse a database newer than they are.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, select, text

from rlhfkit.feedback.errors import CrudError
from rlhfkit.feedback.models import Base, SchemaVersion

SCHEMA_VERSION = 4
HEAD_REVISION = "0004"
REVISION_OF_VERSION = {1: "0001", 2: "0002", 3: "0003", 4: "0004"}
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_LOCK_KEY = 0x726C686B  # "rlhk": the advisory lock that serializes schema upgrades on PostgreSQL


class SchemaError(CrudError):
    """The database is not an rlhfkit feedback store, or is newer than this rlhfkit."""


def _alembic_config(conn: Connection):  # -> alembic.config.Config
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _revision(conn: Connection) -> str | None:
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _stamp(conn: Connection, revision: str) -> None:
    from alembic import command

    command.stamp(_alembic_config(conn), revision)


def _upgrade(conn: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(conn), "head")


def upgrade_schema(engine: Engine) -> int:
    """Create the schema on an empty database or apply pending migrations; return the schema version."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        if not tables:
            Base.metadata.create_all(conn)
            conn.execute(SchemaVersion.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            _stamp(conn, HEAD_REVISION)
            return SCHEMA_VERSION
        if "schema_version" not in tables:
            raise SchemaError(f"database {engine.url.render_as_string(hide_password=True)} has tables but no schema_version: not an rlhfkit feedback store")
        version = conn.execute(select(SchemaVersion.version).where(SchemaVersion.id == 1)).scalar_one()
        if version > SCHEMA_VERSION:
            raise SchemaError(f"database schema version {version} is newer than this rlhfkit ({SCHEMA_VERSION}); upgrade rlhfkit")
        revision = _revision(conn) if "alembic_version" in tables else None
        if revision == HEAD_REVISION:
            return SCHEMA_VERSION
        if revision is None:
            _stamp(conn, REVISION_OF_VERSION[version])
        _upgrade(conn)
        return SCHEMA_VERSION
