"""The API client keeps no cookies (the API is Bearer-only); a real server subprocess (LocalServer, what the
loop runs) answers it, sets no cookie on the API and sends no Server header."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rlhfkit.feedback.client import FeedbackClient, LocalServer, NoCookies


def test_no_cookie_is_stored_or_sent() -> None:
    sent_cookies: list[str | None] = []

    def cookie_setting_server(request: httpx.Request) -> httpx.Response:
        sent_cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, json={"status": "ok"}, headers={"Set-Cookie": "tracker=1; Path=/"})

    with FeedbackClient("http://test", "tok", transport=httpx.MockTransport(cookie_setting_server)) as client:
        assert client.health() == {"status": "ok"} and client.health() == {"status": "ok"}
        assert isinstance(client._http.cookies.jar, NoCookies) and len(client._http.cookies.jar) == 0
    assert sent_cookies == [None, None]


@pytest.mark.slow
def test_server_subprocess_api_works_with_the_cookieless_client(tmp_path: Path) -> None:
    with LocalServer(tmp_path, admin_token="admin-token-cookies-0123456789") as server:  # starts it
        admin = server.admin_client(retry_for_s=5.0)
        campaign = admin.create_campaign("c", "pairwise", gold_rate=0.0, samples=[
            {"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
        annotator = admin.with_token(admin.create_annotator("a", [campaign["id"]])["token"])
        task = annotator.next_assignment(campaign["id"])
        assert task is not None
        stored = annotator.submit(task["assignment_id"], {"choice": "left"}, idempotency_key="key-cookies-1")
        assert stored["replayed"] is False and annotator.next_assignment(campaign["id"]) is None
        assert len(annotator._http.cookies.jar) == 0 and len(admin._http.cookies.jar) == 0
        health = httpx.get(f"{server.url}/api/v1/health")
        assert health.status_code == 200 and "server" not in health.headers and "set-cookie" not in health.headers
        page = httpx.get(f"{server.url}/login")  # the pages are loaded on first use, with their strict CSP
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        admin.close()
        annotator.close()
