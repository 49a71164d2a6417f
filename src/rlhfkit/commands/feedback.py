"""Feedback commands: ``serve`` the annotation app, manage ``campaign``s, ``export`` preference records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import fail

DbOption = Annotated[Optional[str], typer.Option("--db", help="Database URL (sqlite:///path or postgresql://...) or SQLite path; default $RLHFKIT_DB_URL or STATE_DIR/feedback.db.")]
StateDirOption = Annotated[Optional[Path], typer.Option("--state-dir", help="Directory for the default database and the session key; default $RLHFKIT_STATE_DIR or ~/.local/share/rlhfkit.")]
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns (rlhfkit.feedback.rules.MAX_ID)
CampaignOption = Annotated[int, typer.Option("--campaign", min=1, max=MAX_ID, help="Campaign id.")]

campaign_app = typer.Typer(help="Create, inspect, and close annotation campaigns.", no_args_is_help=True)


def _settings(db: Optional[str], state_dir: Optional[Path], **extra: object):  # -> FeedbackSettings
    from rlhfkit.feedback.settings import FeedbackSettings

    values: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if db is not None:
        values["db_url"] = db
    if state_dir is not None:
        values["state_dir"] = state_dir
    try:
        return FeedbackSettings(**values)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")


def _open(db: Optional[str], state_dir: Optional[Path], *, create: bool):  # -> Store
    from rlhfkit.feedback.store import StoreError, open_store

    settings = _settings(db, state_dir)
    try:
        if create:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        return open_store(settings.database_url, create=create, busy_timeout_ms=settings.busy_timeout_ms)
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"state directory {settings.state_dir}: {exc.strerror or exc}")


def serve(db: DbOption = None, state_dir: StateDirOption = None,
          host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless behind a TLS proxy.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (1-65535).")] = 8000,
          admin_token: Annotated[Optional[str], typer.Option("--admin-token", envvar="RLHFKIT_ADMIN_TOKEN", help="Install this admin token (for automation) instead of generating one; it revokes the other admin tokens unless --keep-admin-tokens. Prefer $RLHFKIT_ADMIN_TOKEN or --admin-token-file: a flag shows in the process list.")] = None,
          admin_token_file: Annotated[Optional[Path], typer.Option("--admin-token-file", envvar="RLHFKIT_ADMIN_TOKEN_FILE", dir_okay=False, help="Read the admin token to install from the first line of this file.")] = None,
          keep_admin_tokens: Annotated[bool, typer.Option("--keep-admin-tokens", envvar="RLHFKIT_KEEP_ADMIN_TOKENS", help="Installing --admin-token keeps the other admin tokens valid.")] = False,
          access_log: Annotated[bool, typer.Option("--access-log", help="Log one line per request (off by default: it costs CPU on every request).")] = False) -> None:
    """Run the annotation web app and JSON API; prints the admin token on first run."""
    from rlhfkit.feedback import crud
    from rlhfkit.feedback.security import load_or_create_secret_key
    from rlhfkit.feedback.server.main import run_server

    settings = _settings(db, state_dir, admin_token=admin_token, admin_token_file=admin_token_file,
                         keep_admin_tokens=keep_admin_tokens)
    try:
        token = settings.configured_admin_token()
    except ValueError as exc:
        fail(str(exc))
    store = _open(db, state_dir, create=True)
    try:
        load_or_create_secret_key(settings.secret_key_path)
        with store.session() as session:
            created = crud.ensure_admin_token(session, token=token, keep_others=keep_admin_tokens)
    except crud.InvalidError as exc:
        store.close()
        fail(str(exc))
    except OSError as exc:
        store.close()
        fail(f"session key {settings.secret_key_path}: {exc.strerror or exc}")
    if created:
        typer.echo(f"Admin token (shown once, stored hashed): {created}")
    typer.echo(f"Serving rlhfkit feedback on http://{host}:{port}  (database: {store.engine.url.render_as_string(hide_password=True)})")
    try:
        run_server(settings, store=store, host=host, port=port, access_log=access_log)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


@campaign_app.command("create")
def campaign_create(
    samples: Annotated[Path, typer.Option("--samples", exists=True, dir_okay=False, help="JSONL of {prompt, response, model?, round?}.")],
    kind: Annotated[str, typer.Option("--kind", help="pairwise | rating | ranking | binary | edit (the annotator rewrites the response).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Campaign name; default the samples file name.")] = None,
    redundancy: Annotated[int, typer.Option("--redundancy", "-k", min=1, help="Annotators per task.")] = 1,
    scale: Annotated[str, typer.Option("--scale", help="Rating scale lo,hi.")] = "1,5",
    rank_k: Annotated[int, typer.Option("--rank-k", min=2, help="Responses per ranking task.")] = 3,
    gold_rate: Annotated[float, typer.Option("--gold-rate", min=0.0, max=1.0, help="Share of gold tasks mixed in.")] = 0.1,
    critique: Annotated[bool, typer.Option("--critique/--no-critique", help="Let annotators add a free-text critique.")] = False,
    instructions: Annotated[str, typer.Option("--instructions", help="Shown above every task.")] = "",
    model: Annotated[Optional[str], typer.Option("--model", help="Model name for samples that do not carry one.")] = None,
    round_: Annotated[Optional[int], typer.Option("--round", help="Loop round for samples that do not carry one.")] = None,
    db: DbOption = None, state_dir: StateDirOption = None,
) -> None:
    """Create a campaign from a samples file and build its tasks; prints its id."""
    from rlhfkit.feedback import crud

    try:
        lo, hi = (float(v) for v in scale.split(","))
    except ValueError:
        fail(f"--scale: expected lo,hi numbers, got {scale!r}")
    try:
        specs = crud.parse_samples_jsonl(samples.read_text(encoding="utf-8"), source=str(samples))
    except crud.InvalidError as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"{samples}: not valid UTF-8 (byte {exc.start}: {exc.reason})")
    except OSError as exc:
        fail(f"{samples}: cannot read ({exc.strerror or exc})")
    specs = [replace(s, model=s.model if s.model is not None else model, round=s.round if s.round is not None else round_)
             for s in specs]
    store = _open(db, state_dir, create=True)
    try:
        with store.session() as session:
            campaign = crud.create_campaign(session, name=name or samples.stem, kind=kind, redundancy=redundancy, scale=(lo, hi),
                                            rank_k=rank_k, allow_critique=critique, instructions=instructions,
                                            gold_rate=gold_rate, samples=specs)
            summary = crud.campaign_summary(session, campaign=campaign)
    except crud.InvalidError as exc:
        fail(str(exc))
    finally:
        store.close()
    if summary.get("warning"):
        typer.echo(f"warning: {summary['warning']}", err=True)
    typer.echo(json.dumps(summary))


@campaign_app.command("invite")
def campaign_invite(campaign: CampaignOption, name: Annotated[str, typer.Option("--name", help="Annotator name.")],
                    db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Invite an annotator to a campaign; prints their token once (it is stored hashed)."""
    from rlhfkit.feedback import crud

    store = _open(db, state_dir, create=False)
    try:
        with store.session() as session:
            crud.get_campaign_for(session, campaign_id=campaign, principal=crud.Principal(role="admin"))
            annotator, token = crud.create_annotator(session, name=name, campaign_ids=[campaign])
    except crud.CrudError as exc:
        fail(str(exc))
    finally:
        store.close()
    typer.echo(json.dumps({"id": annotator.id, "name": annotator.name, "token": token}))


@campaign_app.command("list")
def campaign_list(db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """List every campaign with its completion."""
    from rich.table import Table

    from rlhfkit.feedback import crud, reports
    from rlhfkit.utils.progress import console

    store = _open(db, state_dir, create=False)
    table = Table("id", "name", "kind", "status", "complete", "annotations")
    with store.read_session() as session:
        for c in crud.list_campaigns(session, principal=crud.Principal(role="admin")):
            p = reports.campaign_progress(session, campaign=c)
            table.add_row(str(c.id), c.name, c.kind, c.status, f"{p['complete']}/{p['tasks']}", str(p["annotations"]))
    store.close()
    console.print(table)


@campaign_app.command("status")
def campaign_status(campaign: CampaignOption, db: DbOption = None, state_dir: StateDirOption = None,
                    as_json: Annotated[bool, typer.Option("--json", help="Print the progress as JSON.")] = False) -> None:
    """Completion of a campaign and per-annotator counts and gold accuracy."""
    from rich.table import Table

    from rlhfkit.feedback import crud, reports
    from rlhfkit.utils.progress import console

    store = _open(db, state_dir, create=False)
    try:
        with store.read_session() as session:
            c = crud.get_campaign_for(session, campaign_id=campaign, principal=crud.Principal(role="admin"))
            progress = reports.campaign_progress(session, campaign=c)
            name, status = c.name, c.status
    except crud.CrudError as exc:
        fail(str(exc))
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(progress))
        return
    console.print(f"[bold]{name}[/] ({status}): {progress['complete']}/{progress['tasks']} tasks complete, "
                  f"{progress['annotations']} annotations, {progress['skips']} skips, {progress['open_assignments']} open")
    table = Table("annotator", "answered", "skipped", "gold accuracy", "median s")
    for a in progress["annotators"]:
        acc = "-" if a["gold_accuracy"] is None else f"{a['gold_accuracy']:.0%} ({a['gold_correct']}/{a['gold_answered']})"
        med = "-" if a["median_time_ms"] is None else f"{a['median_time_ms'] / 1000:.1f}"
        table.add_row(a["name"], str(a["annotations"]), str(a["skips"]), acc, med)
    console.print(table)


@campaign_app.command("close")
def campaign_close(campaign: CampaignOption, db: DbOption = None, state_dir: StateDirOption = None,
                   revoke_tokens: Annotated[bool, typer.Option("--revoke-tokens", help="Also revoke the tokens (and end the web sessions) of members left with no open campaign.")] = False) -> None:
    """Stop serving tasks and accepting answers for a campaign."""
    from rlhfkit.feedback import access, crud

    store = _open(db, state_dir, create=False)
    revoked: list[int] = []
    try:
        with store.session() as session:
            c = crud.close_campaign(session, campaign=crud.get_campaign_for(session, campaign_id=campaign, principal=crud.Principal(role="admin")))
            if revoke_tokens:
                revoked = access.revoke_members_of_closed(session, campaign=c)
    except crud.CrudError as exc:
        fail(str(exc))
    finally:
        store.close()
    typer.echo(f"campaign {campaign} closed" + (f"; revoked annotators {revoked}" if revoke_tokens else ""))


def export(campaign: CampaignOption,
           out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Output JSONL of feedback records.")],
           aggregate: Annotated[str, typer.Option("--aggregate", help="none (one record per annotation) | majority | reliability.")] = "none",
           edits: Annotated[str, typer.Option("--edits", help="pairs: each edit is a pairwise record (rewrite over original) among the others | sft: write only the edits, as SFT examples {prompt, completion}.")] = "pairs",
           critiques: Annotated[Optional[str], typer.Option("--critiques", help="Also write the rating/label answers' critiques as rating records weighted by the encoder's confidence: rules, rules:FILE, learned, learned:FILE.npz, module:function or a reward-model dir.")] = None,
           db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Write a campaign's feedback records (the format train-rm reads)."""
    from rlhfkit.feedback import crud, reports
    from rlhfkit.utils.atomic_file import atomic_write_lines

    if critiques and edits == "sft":
        fail("--critiques adds feedback records; it cannot go into an --edits sft file of SFT examples")
    store = _open(db, state_dir, create=False)
    skipped: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        with store.read_session() as session:
            c = crud.get_campaign_for(session, campaign_id=campaign, principal=crud.Principal(role="admin"))
            records = reports.export_records(session, campaign=c, aggregate=aggregate, skipped=skipped, edits=edits)
            if critiques:
                rows = reports.annotation_rows(session, campaign=c)
    except (crud.CrudError, NotImplementedError) as exc:
        fail(str(exc))
    finally:
        store.close()
    if critiques:
        records = records + _encoded_critiques(rows, critiques)
    for line in skipped:
        typer.echo(f"skipped {line}", err=True)
    try:
        atomic_write_lines(out, (json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records))
    except OSError as exc:
        fail(f"--out {out}: cannot write ({exc.strerror or exc})")
    typer.echo(f"wrote {len(records)} records to {out}" + (f" ({len(skipped)} skipped, see above)" if skipped else ""))


def _encoded_critiques(rows: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """The critiques of annotation ``rows`` as rating record dicts, encoded by the encoder ``spec``."""
    from rlhfkit.critiques.base import CritiqueError, items_from_rows
    from rlhfkit.critiques.records import encode_items, load_encoder
    from rlhfkit.data.records import record_to_dict

    items = items_from_rows(rows)
    try:
        encoder, fit_line = load_encoder(spec, items)
        outcome = encode_items(items, encoder, source="critiques")
    except (CritiqueError, ValueError) as exc:
        fail(f"--critiques {spec}: {exc}")
    for line in ([fit_line] if fit_line else []) + outcome.report.lines():
        typer.echo(line, err=True)
    return [record_to_dict(record) for record in outcome.records]


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``campaign``, ``export`` and ``token`` to the CLI."""
    from rlhfkit.commands.token import token_app

    app.command("serve")(serve)
    app.add_typer(campaign_app, name="campaign")
    app.command("export")(export)
    app.add_typer(token_app, name="token")
