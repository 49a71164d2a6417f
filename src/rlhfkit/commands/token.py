"""``rlhfkit token``: list, create, revoke and rotate admin and annotator tokens, and rotate the session key.

Changes take effect at once for web sessions (their rows are deleted) and within the server's token
cache lifetime (``RLHFKIT_TOKEN_CACHE_S``, 5 s by default) for API calls of a running server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlhfkit.commands.common import fail
from rlhfkit.commands.feedback import MAX_ID, DbOption, StateDirOption, _open, _settings

token_app = typer.Typer(help="List, create, revoke and rotate tokens; rotate the session signing key.", no_args_is_help=True)
AdminIdOption = Annotated[Optional[int], typer.Option("--admin", min=1, max=MAX_ID, help="Admin token id (see `token list`).")]
AnnotatorIdOption = Annotated[Optional[int], typer.Option("--annotator", min=1, max=MAX_ID, help="Annotator id.")]
ExpiresOption = Annotated[Optional[float], typer.Option("--expires-in-days", min=0.001, max=3650, help="Expire the new token after this many days (default: never).")]


def _one_target(admin: Optional[int], annotator: Optional[int]) -> None:
    if (admin is None) == (annotator is None):
        fail("give exactly one of --admin ID or --annotator ID")


@token_app.command("list")
def token_list(db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Print every admin token and annotator (metadata only; tokens are stored hashed) as JSON."""
    from rlhfkit.feedback import access

    store = _open(db, state_dir, create=False)
    try:
        with store.read_session() as session:
            typer.echo(json.dumps(access.list_tokens(session), indent=2))
    finally:
        store.close()


@token_app.command("create-admin")
def token_create_admin(label: Annotated[str, typer.Option("--label", help="What this token is for.")] = "",
                       expires_in_days: ExpiresOption = None, db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Create an additional admin token; prints it once."""
    from rlhfkit.feedback import access, crud

    store = _open(db, state_dir, create=False)
    try:
        with store.session() as session:
            row, plain = access.create_admin_token(session, label=label, expires_in_days=expires_in_days)
            typer.echo(json.dumps({"id": row.id, "token": plain}))
    except crud.CrudError as exc:
        fail(str(exc))
    finally:
        store.close()


@token_app.command("revoke")
def token_revoke(admin: AdminIdOption = None, annotator: AnnotatorIdOption = None,
                 db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Revoke an admin or annotator token; the web sessions it opened end at once."""
    from rlhfkit.feedback import access, crud

    _one_target(admin, annotator)
    store = _open(db, state_dir, create=False)
    try:
        with store.session() as session:
            if admin is not None:
                access.revoke_admin_token(session, token_id=admin)
            else:
                assert annotator is not None
                access.revoke_annotator(session, annotator_id=annotator)
    except crud.CrudError as exc:
        fail(str(exc))
    finally:
        store.close()
    typer.echo(f"revoked {'admin token' if admin is not None else 'annotator'} {admin or annotator}")


@token_app.command("rotate")
def token_rotate(admin: AdminIdOption = None, annotator: AnnotatorIdOption = None, expires_in_days: ExpiresOption = None,
                 db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Replace a token by a new one (printed once); the old one and its web sessions end."""
    from rlhfkit.feedback import access, crud

    _one_target(admin, annotator)
    store = _open(db, state_dir, create=False)
    try:
        with store.session() as session:
            if admin is not None:
                row, plain = access.rotate_admin_token(session, token_id=admin, expires_in_days=expires_in_days)
                out = {"admin_token_id": row.id, "token": plain}
            else:
                assert annotator is not None
                ann, plain = access.rotate_annotator(session, annotator_id=annotator, expires_in_days=expires_in_days)
                out = {"annotator_id": ann.id, "token": plain}
    except crud.CrudError as exc:
        fail(str(exc))
    finally:
        store.close()
    typer.echo(json.dumps(out))


@token_app.command("rotate-session-key")
def token_rotate_session_key(db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Write a new session signing key and end every web session (restart the server to use the key)."""
    from rlhfkit.feedback import access
    from rlhfkit.feedback.security import rotate_secret_key

    settings = _settings(db, state_dir)
    store = _open(db, state_dir, create=False)
    try:
        rotate_secret_key(Path(settings.secret_key_path))
        with store.session() as session:
            ended = access.end_all_sessions(session)
    except OSError as exc:
        fail(f"{settings.secret_key_path}: cannot write the new key ({exc.strerror or exc})")
    finally:
        store.close()
    typer.echo(f"new session key in {settings.secret_key_path}; {ended} web session(s) ended")
