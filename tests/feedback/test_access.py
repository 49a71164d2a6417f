"""Access matrix: every route x {no token, annotator A, annotator B, admin}; refused calls change no row.

A is a member of campaign C1 and holds an open assignment there; B is a member of C2 only.
API callers present Bearer tokens; web callers hold a signed session cookie (and a valid CSRF token,
so that a refusal here is about access, not CSRF: see test_csrf.py).
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rlhfkit.feedback.models import Base



CALLERS = ("none", "A", "B", "admin")
ADMIN = "admin-access-token-0123456789abcdef"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class World:
    client: TestClient
    store: Any
    ids: dict[str, int]
    tokens: dict[str, Optional[str]]
    web: dict[str, TestClient] = field(default_factory=dict)
    csrf: dict[str, str] = field(default_factory=dict)

    def as_(self, token: Optional[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}


def snapshot(store: Any) -> dict[str, list[tuple]]:
    """Every row of every table, for before/after comparisons."""
    out = {}
    with store.read_session() as s:
        for table in Base.metadata.sorted_tables:
            out[table.name] = sorted(tuple(map(str, row)) for row in s.execute(select(table)).all())
    return out


def _make_app(root: Path) -> Any:
    from rlhfkit.feedback.server.app import create_app
    from rlhfkit.feedback.settings import FeedbackSettings

    return create_app(FeedbackSettings(state_dir=root / "state", db_url=f"sqlite:///{root / 'f.db'}", admin_token=ADMIN))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Build the world once (campaigns, tokens, signed-in sessions); each test runs on a copy of it."""
    root = tmp_path_factory.mktemp("access-template")
    app = _make_app(root)
    api = TestClient(app, base_url="http://testserver")
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def post(path: str, body: dict[str, Any], headers: dict[str, str] = admin) -> dict[str, Any]:
        resp = api.post(path, json=body, headers=headers)
        assert resp.status_code == 201, resp.text
        return resp.json()

    pairs = [{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}, {"prompt": "q", "response": "c"}, {"prompt": "q", "response": "d"}]
    c1 = post("/api/v1/campaigns", {"name": "C1", "kind": "pairwise", "samples": pairs})
    c2 = post("/api/v1/campaigns", {"name": "C2", "kind": "pairwise", "samples": pairs})
    ann_a = post("/api/v1/annotators", {"name": "A", "campaign_ids": [c1["id"]]})
    ann_b = post("/api/v1/annotators", {"name": "B", "campaign_ids": [c2["id"]]})
    view = api.get(f"/api/v1/campaigns/{c1['id']}/next", headers={"Authorization": f"Bearer {ann_a['token']}"}).json()
    samples = api.get(f"/api/v1/campaigns/{c1['id']}/samples", headers=admin).json()
    tokens = {"none": None, "A": ann_a["token"], "B": ann_b["token"], "admin": ADMIN}
    cookies, csrf = {}, {}
    for who, landing in (("none", "/login"), ("A", "/tasks"), ("B", "/tasks"), ("admin", "/admin")):
        client = TestClient(app, base_url="http://testserver", follow_redirects=False)
        token = CSRF.search(client.get("/login").text).group(1)
        if tokens[who] is not None:
            assert client.post("/login", data={"token": tokens[who], "csrf_token": token}).status_code == 303
            token = CSRF.search(client.get(landing).text).group(1)
        cookies[who], csrf[who] = dict(client.cookies), token
    app.state.store.close()
    info = {"ids": {"c1": c1["id"], "c2": c2["id"], "annA": ann_a["id"], "annB": ann_b["id"],
                    "asgA": view["assignment_id"], "s0": samples[0]["id"], "s1": samples[1]["id"]},
            "tokens": tokens, "cookies": cookies, "csrf": csrf}
    return root, info


@pytest.fixture
def world(template: tuple[Path, dict[str, Any]], tmp_path: Path) -> Any:
    """A private copy of the template world: same ids, tokens and session cookies."""
    root, info = template
    shutil.copytree(root, tmp_path / "w")
    app = _make_app(tmp_path / "w")
    w = World(client=TestClient(app, base_url="http://testserver"), store=app.state.store,
              ids=info["ids"], tokens=info["tokens"], csrf=info["csrf"])
    for who, cookies in info["cookies"].items():
        w.web[who] = TestClient(app, base_url="http://testserver", follow_redirects=False, cookies=cookies)
    yield w
    app.state.store.close()


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    expect: tuple[int, int, int, int]  # none, A, B, admin
    body: Optional[Callable[[World, str], dict[str, Any]]] = None
    web: bool = False
    multipart: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def _new_campaign(w: World, who: str) -> dict[str, Any]:
    return {"name": "new", "kind": "binary", "samples": [{"prompt": "x", "response": "y"}]}


def _submission(w: World, who: str) -> dict[str, Any]:
    return {"idempotency_key": f"key-{who}-{uuid.uuid4().hex}", "answer": {"choice": "left"}}


def _form(**fields: Any) -> Callable[[World, str], dict[str, Any]]:
    return lambda w, who: {"csrf_token": w.csrf[who], **fields}


API_ROUTES = [
    Route("GET", "/api/v1/health", (200, 200, 200, 200)),
    Route("GET", "/api/v1/me", (401, 200, 200, 200)),
    Route("POST", "/api/v1/campaigns", (401, 403, 403, 201), _new_campaign),
    Route("GET", "/api/v1/campaigns", (401, 200, 200, 200)),
    Route("GET", "/api/v1/campaigns/{c1}", (401, 200, 404, 200)),
    Route("POST", "/api/v1/campaigns/{c1}/close", (401, 403, 403, 200)),
    Route("POST", "/api/v1/campaigns/{c1}/samples", (401, 403, 403, 201), lambda w, who: {"samples": [{"prompt": "z", "response": "z"}]}),
    Route("GET", "/api/v1/campaigns/{c1}/samples", (401, 403, 403, 200)),
    Route("POST", "/api/v1/campaigns/{c1}/tasks", (401, 403, 403, 201), lambda w, who: {"tasks": [{"sample_ids": [w.ids["s0"], w.ids["s1"]], "gold": {"winner": "tie"}}]}),
    Route("GET", "/api/v1/campaigns/{c1}/tasks", (401, 403, 403, 200)),
    Route("POST", "/api/v1/campaigns/{c1}/members", (401, 403, 403, 200), lambda w, who: {"annotator_id": w.ids["annB"]}),
    Route("POST", "/api/v1/annotators", (401, 403, 403, 201), lambda w, who: {"name": "new", "campaign_ids": [w.ids["c1"]]}),
    Route("GET", "/api/v1/annotators", (401, 403, 403, 200)),
    Route("GET", "/api/v1/campaigns/{c1}/next", (401, 200, 404, 403)),
    Route("GET", "/api/v1/campaigns/{c2}/next", (401, 404, 200, 403)),
    Route("POST", "/api/v1/assignments/{asgA}/annotations", (401, 201, 404, 403), _submission),
    Route("GET", "/api/v1/campaigns/{c1}/progress", (401, 403, 403, 200)),
    Route("GET", "/api/v1/campaigns/{c1}/annotators/{annA}/progress", (401, 200, 404, 200)),
    Route("GET", "/api/v1/campaigns/{c2}/annotators/{annA}/progress", (401, 404, 404, 200)),
    Route("GET", "/api/v1/campaigns/{c2}/annotators/{annB}/progress", (401, 404, 200, 200)),
    Route("GET", "/api/v1/campaigns/{c1}/annotations", (401, 403, 403, 200)),
    Route("GET", "/api/v1/campaigns/{c1}/export", (401, 403, 403, 200)),
    Route("GET", "/api/v1/campaigns/999/progress", (401, 403, 403, 404)),
    Route("GET", "/api/v1/campaigns/999", (401, 404, 404, 404)),
    Route("POST", "/api/v1/assignments/999/annotations", (401, 404, 404, 403), _submission),
]
WEB_ROUTES = [
    Route("GET", "/", (303, 303, 303, 303), web=True),
    Route("GET", "/login", (200, 200, 200, 200), web=True),
    Route("GET", "/tasks", (303, 200, 200, 403), web=True),
    Route("GET", "/campaigns/{c1}/task", (303, 200, 404, 403), web=True),
    Route("POST", "/assignments/{asgA}/answer", (303, 303, 404, 403), _form(idempotency_key="web-key-123", choice="left"), web=True),
    Route("GET", "/admin", (303, 403, 403, 200), web=True),
    Route("POST", "/admin/campaigns", (303, 403, 403, 303), _form(name="web campaign", kind="binary"), web=True, multipart=True),
    Route("GET", "/admin/campaigns/{c1}", (303, 403, 403, 200), web=True),
    Route("POST", "/admin/campaigns/{c1}/invite", (303, 403, 403, 201), _form(name="invitee"), web=True),
    Route("POST", "/admin/campaigns/{c1}/close", (303, 403, 403, 303), _form(), web=True),
    Route("GET", "/admin/campaigns/{c1}/annotators/{annA}", (303, 403, 403, 200), web=True),
    Route("GET", "/admin/campaigns/{c1}/export", (303, 403, 403, 200), web=True),
    Route("GET", "/admin/campaigns/999", (303, 403, 403, 404), web=True),
    Route("POST", "/logout", (303, 303, 303, 303), _form(), web=True),
]
ALLOWED = {200, 201}


def call(w: World, route: Route, who: str) -> Any:
    """Make one call of a route as one caller."""
    path = route.path.format(**w.ids)
    body = route.body(w, who) if route.body else None
    if route.web:
        client = w.web[who]
        if route.method == "GET":
            return client.get(path)
        if route.multipart:
            return client.post(path, data=body, files={"samples": ("s.jsonl", b'{"prompt": "p", "response": "r"}\n')})
        return client.post(path, data=body)
    return w.client.request(route.method, path, json=body, headers=w.as_(w.tokens[who]))


def _refused(route: Route, who: str) -> bool:
    expected = route.expect[CALLERS.index(who)]
    if route.web and expected == 303:
        return who == "none" and route.path not in ("/", "/login", "/logout")
    return expected not in ALLOWED and expected != 303


@pytest.mark.parametrize("route", API_ROUTES + WEB_ROUTES, ids=lambda r: r.name)
def test_access_matrix(world: World, route: Route) -> None:
    before = snapshot(world.store)
    order = sorted(CALLERS, key=lambda who: not _refused(route, who))  # refused callers first
    for who in order:
        expected = route.expect[CALLERS.index(who)]
        resp = call(world, route, who)
        assert resp.status_code == expected, f"{route.name} as {who}: {resp.status_code} {resp.text[:200]}"
        if _refused(route, who):
            if resp.status_code == 303:
                assert resp.headers["location"] == "/login"
            assert snapshot(world.store) == before, f"{route.name} as {who} was refused but changed the database"
        if resp.status_code in (401, 403, 404) and route.path.startswith("/api/"):
            assert "detail" in resp.json()


def test_annotator_lists_only_own_campaigns_and_never_sees_tokens_or_gold(world: World) -> None:
    listed = world.client.get("/api/v1/campaigns", headers=world.as_(world.tokens["B"])).json()
    assert [c["id"] for c in listed] == [world.ids["c2"]]
    view = world.client.get(f"/api/v1/campaigns/{world.ids['c1']}/next", headers=world.as_(world.tokens["A"])).json()
    assert set(view) == {"assignment_id", "task_id", "campaign_id", "kind", "scale", "prompt", "instructions",
                         "allow_critique", "items", "served_at"}
    page = world.web["admin"].get(f"/admin/campaigns/{world.ids['c1']}").text
    assert world.tokens["A"] not in page and world.tokens["B"] not in page


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer wrong-token-xxxxxxxxxxxx", "Basic abc", "bearer x", "Token x"])
def test_malformed_or_unknown_tokens_are_401(world: World, header: str) -> None:
    resp = world.client.get("/api/v1/campaigns", headers={"Authorization": header})
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"


def test_deactivated_annotator_loses_api_and_web_access(world: World) -> None:
    from rlhfkit.feedback.models import Annotator

    with world.store.session() as s:
        s.get(Annotator, world.ids["annA"]).active = False
        s.commit()
    assert world.client.get("/api/v1/me", headers=world.as_(world.tokens["A"])).status_code == 401
    resp = world.web["A"].get("/tasks")
    assert resp.status_code == 303 and resp.headers["location"] == "/login"


def test_session_cookie_does_not_authorize_api(world: World) -> None:
    client = world.web["admin"]
    assert client.get("/api/v1/campaigns").status_code == 401
    assert client.post("/api/v1/campaigns", json=_new_campaign(world, "admin")).status_code == 401
