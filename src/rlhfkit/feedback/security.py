"""Tokens, their hashes, the per-installation session signing key, and CSRF tokens.

Invite and admin tokens carry 256 bits of randomness, so a plain sha256 (no salt, no slow KDF) is
enough to store them: a leaked hash cannot be reversed and lookups stay O(1) through an index.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

TOKEN_BYTES = 32


def new_token(prefix: str) -> str:
    """A fresh bearer token such as ``ann_<43 url-safe chars>`` (256 random bits)."""
    return f"{prefix}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def hash_token(token: str) -> str:
    """sha256 hex digest of a token: what the database stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented token against a stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def new_csrf_token() -> str:
    """A random CSRF token kept in the signed session and echoed by every form."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, submitted: str | None) -> bool:
    """True when the submitted CSRF token equals the session's (constant time; both required)."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), submitted.encode("utf-8"))


def load_or_create_secret_key(path: Path) -> str:
    """Read this installation's session signing key, creating it (mode 0600) on first use.

    Refuses a key file that group or others can read: such a key lets anyone forge sessions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"session key {path} has mode {mode:04o}; run `chmod 600 {path}`") from None
        key = path.read_text(encoding="ascii").strip()
        if len(key) < 32:
            raise PermissionError(f"session key {path} is shorter than 32 characters; delete it to generate a new one")
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def rotate_secret_key(path: Path) -> None:
    """Replace the session signing key by a fresh one (mode 0600, atomic): every signed cookie stops verifying."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
