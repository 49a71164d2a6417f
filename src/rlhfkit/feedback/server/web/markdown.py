"""Responses as safe Markdown: markdown-it (no raw HTML, no images, http(s) links only), then nh3 as a second net.

Model output is untrusted. markdown-it escapes all text and raw HTML; ``validateLink`` keeps only
absolute http/https links (so ``javascript:``, ``data:`` and relative URLs stay text); nh3 (ammonia)
then drops any tag or attribute outside the allowlist, so a parser bug alone cannot reach the page.
"""

from __future__ import annotations

import functools

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

LINK_SCHEMES = frozenset({"http", "https"})
TAGS = frozenset({"p", "br", "hr", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a",
                  "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"})
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "code": {"class"}}
#: Renders of texts up to this length are cached (markdown-it-py is pure Python: milliseconds per KB).
CACHE_CHARS = 16_384


def _link_allowed(url: str) -> bool:
    """Only absolute http(s) URLs become links."""
    scheme, sep, _ = url.strip().partition(":")
    return bool(sep) and scheme.lower() in LINK_SCHEMES


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable(["image"])
    md.validateLink = _link_allowed  # type: ignore[method-assign]
    return md


_MD = _parser()


def _render(text: str) -> str:
    return nh3.clean(_MD.render(text), tags=set(TAGS), attributes={k: set(v) for k, v in ATTRIBUTES.items()},
                     url_schemes=set(LINK_SCHEMES), link_rel="nofollow noopener noreferrer", strip_comments=True)


_render_cached = functools.lru_cache(maxsize=512)(_render)


def markdown_html(text: str) -> Markup:
    """``text`` rendered as Markdown to sanitised HTML (code blocks keep their whitespace); texts up to
    CACHE_CHARS are cached, since a sample is shown to each of its annotators and on every reload."""
    return Markup(_render_cached(text) if len(text) <= CACHE_CHARS else _render(text))
