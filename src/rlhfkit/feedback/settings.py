"""Settings of the annotation server, read from arguments or ``RLHFKIT_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_state_dir() -> Path:
    """Where the server keeps its database and signing key unless told otherwise."""
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "rlhfkit"


class FeedbackSettings(BaseSettings):
    """Server configuration; every field can be set as ``RLHFKIT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RLHFKIT_", extra="ignore")

    state_dir: Path = Field(default_factory=default_state_dir, description="Directory for feedback.db and session.key.")
    db_url: Optional[str] = Field(None, description="Database URL or SQLite path; default <state_dir>/feedback.db.")
    admin_token: Optional[str] = Field(None, description="Admin token to install (stored hashed); else one is generated on first start. Prefer the environment or admin_token_file to a command-line flag, which the process list shows.")
    admin_token_file: Optional[Path] = Field(None, description="File whose first line is the admin token to install (instead of admin_token).")
    keep_admin_tokens: bool = Field(False, description="Installing admin_token keeps the other admin tokens valid (default: it revokes them).")
    busy_timeout_ms: int = Field(10_000, ge=5000, description="How long SQLite writers wait for the lock.")
    assignment_timeout_s: float = Field(1800.0, gt=0, description="An unanswered assignment stops holding its slot after this.")
    token_cache_s: float = Field(5.0, ge=0, description="How long a checked API token is trusted without a database lookup (0: always look up).")
    assignment_seed: Optional[int] = Field(None, description="Seed task choice and display order per (campaign, annotator, n-th task) for reproducible simulations; unset: unpredictable, as people need.")
    parent_pid: Optional[int] = Field(None, description="Exit when this process (the one that started the server) is gone.")
    session_max_age_s: int = Field(8 * 3600, gt=0, description="Lifetime of a signed-in browser session.")
    cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only (set RLHFKIT_COOKIE_SECURE=1 behind TLS).")
    max_body_bytes: int = Field(1 << 20, ge=64 * 1024, description="Largest request body accepted, except the admin's uploads (413 beyond).")
    max_upload_bytes: int = Field(64 << 20, ge=1 << 20, description="Largest body of an admin upload (campaign, samples, tasks); 413 beyond, never truncated.")

    def configured_admin_token(self) -> Optional[str]:
        """The admin token to install: ``admin_token``, else the first line of ``admin_token_file``."""
        if self.admin_token:
            return self.admin_token
        if self.admin_token_file is None:
            return None
        try:
            lines = self.admin_token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"admin token file {self.admin_token_file}: cannot read ({exc})") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"admin token file {self.admin_token_file}: first line is empty")
        return token

    @property
    def database_url(self) -> str:
        """The configured database URL, defaulting to SQLite in the state directory."""
        return self.db_url or f"sqlite:///{(self.state_dir / 'feedback.db').resolve()}"

    @property
    def secret_key_path(self) -> Path:
        """The per-installation session signing key file (mode 0600)."""
        return self.state_dir / "session.key"
