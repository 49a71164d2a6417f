"""Jinja2 rendering with autoescape always on (prompts and responses are untrusted text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from rlhfkit.feedback.crud import Principal
from rlhfkit.feedback.server.api.deps import csrf_token_for
from rlhfkit.feedback.server.web.markdown import markdown_html

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters["num"] = lambda value: f"{float(value):g}"
_env.filters["markdown"] = markdown_html


def render(request: Request, template: str, *, user: Optional[Principal] = None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """Render a page with the CSRF token and signed-in user available to every template."""
    html = _env.get_template(template).render(request=request, csrf_token=csrf_token_for(request), user=user, **context)
    return HTMLResponse(html, status_code=status_code)
