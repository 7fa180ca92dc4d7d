"""Property tests of both webhook endpoints through the real Flask app and a real Redis: whatever
arrives (headers, bytes, JSON, real payloads mangled), the answer is a JSON verdict, never a 5xx."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings, strategies as st

from bot.config import ServerConfig
from bot.forges.github import signature
from bot.settings import Settings
from bot.web import create_app
from tests.conftest import FIXTURES, payload
from tests.harness import DEEP, mutated, paths, replaced, words

SECRET, TOKEN = "fuzz-webhook-secret", "fuzz-gitlab-token"
VERDICTS = {"error", "ignored", "queued", "duplicate"}
EVENTS = {
    "github": ["pull_request", "push", "issue_comment", "ping", "installation", "check_run", "pull_request_review"],
    "gitlab": ["Merge Request Hook", "Push Hook", "Note Hook", "Tag Push Hook", "Pipeline Hook", "System Hook"],
}
FIXTURE_EVENTS = {"merge_request": "Merge Request Hook", "note": "Note Hook", "push": "Push Hook"}
"""GitLab's event header for each fixture's name; GitHub's is the name's first part."""
EVENT_HEADER = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event"}
DELIVERY_HEADERS = ["X-GitHub-Delivery", "X-Gitlab-Event-UUID", "Idempotency-Key"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "multipart/form-data", ""]

rarely = st.sampled_from([False] * 9 + [True])
# What a header value can hold on the wire: latin-1 text without line breaks.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=40)
deep_json = st.builds(lambda depth, kind: ('{"a":' * depth + "1" + "}" * depth) if kind else "[" * depth + "]" * depth,
                      st.sampled_from([600, 1_000, 5_000, 200_000]), st.booleans())


def fixtures(forge: str) -> list[tuple[str, dict]]:
    """(event header, payload) for every real payload of a forge."""
    out = []
    for file in sorted((FIXTURES / forge).glob("*.json")):
        kind = file.stem.split(".")[0]
        out.append((kind if forge == "github" else FIXTURE_EVENTS[kind], payload(f"{forge}/{file.stem}")))
    return out


FIXTURE_PAYLOADS = {forge: fixtures(forge) for forge in ("github", "gitlab")}
VOCABULARY = {forge: words(*(document for _, document in found)) for forge, found in FIXTURE_PAYLOADS.items()}


@pytest.fixture(scope="module")
def client(redis_server):
    connection = redis.Redis.from_url(redis_server.url)
    connection.flushall()  # the test run's own server
    # The real GitLab payloads come from a server at example.com: their clone URLs are on the forge.
    settings_ = Settings(redis_url=redis_server.url, name="fuzz", github_webhook_secret=SECRET,
                         gitlab_webhook_token=TOKEN, gitlab_url="http://example.com")
    app = create_app(settings_, ServerConfig(repos=("*",)), connection)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # an exception escaping a view fails the example
    yield app.test_client()
    connection.flushall()


def credentials(forge: str, body: bytes, how: str, garbage: str) -> dict[str, str]:
    """The signature or token header: right, wrong in some way, or missing."""
    if forge == "gitlab":
        token = {"right": TOKEN, "garbled": garbage, "other-body": TOKEN[:-1], "sha1": TOKEN.upper()}
        return {} if how == "missing" else {"X-Gitlab-Token": token[how]}
    digest = {
        "right": signature(SECRET, body),
        "garbled": garbage,
        "other-body": signature(SECRET, body + b" "),
        "sha1": "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
    }
    return {} if how == "missing" else {"X-Hub-Signature-256": digest[how]}


@st.composite
def requests(draw: st.DrawFn, bodies: st.SearchStrategy[tuple[str, str | None, bytes]],
             how: st.SearchStrategy[str]) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path, body, headers). `bodies` gives (forge, the event its body is for, body)."""
    forge, event, body = draw(bodies)
    if event is None or draw(rarely):  # another event, real or not
        event = draw(st.sampled_from(EVENTS[forge]) | header_text)
    headers = {} if draw(rarely) else {EVENT_HEADER[forge]: event}
    headers |= credentials(forge, body, draw(how), draw(header_text))
    for name in draw(st.lists(st.sampled_from(DELIVERY_HEADERS), max_size=2)):
        headers[name] = draw(header_text)
    headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES) | header_text)
    headers |= draw(st.dictionaries(st.from_regex(r"X-[A-Za-z-]{1,12}", fullmatch=True), header_text, max_size=2))
    return "POST", f"/webhooks/{forge}", body, headers


def signed(forge: str, event: str, document: object, depth: int = 1_000) -> tuple[str, str, bytes, dict[str, str]]:
    """A correctly signed delivery of `document`, nested `depth` deep where it holds DEEP."""
    text = json.dumps(document).replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    body = text.encode()
    return "POST", f"/webhooks/{forge}", body, {
        EVENT_HEADER[forge]: event, **credentials(forge, body, "right", ""), "X-GitHub-Delivery": text[-100:]}


def assert_answered(client, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    response = client.open(path, method=method, data=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])
    answer = response.get_json(silent=True)
    assert isinstance(answer, dict) and answer.keys() & VERDICTS, response.get_data()[:300]


forges = st.sampled_from(["github", "gitlab"])
raw_bodies = st.tuples(forges, st.none(), st.binary(max_size=300) | deep_json.map(str.encode))
json_bodies = st.tuples(forges, st.none(), json_values.map(lambda v: json.dumps(v).encode()))
every_credential = st.sampled_from(["right", "missing", "garbled", "other-body", "sha1"])
SLOW = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SLOW
@given(data=st.data())
def test_any_method_path_and_bytes(client, data):
    method, path, body, headers = data.draw(requests(raw_bodies, every_credential))
    method = data.draw(st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "PATCH"]))
    path = data.draw(st.sampled_from([path, path, "/webhooks/bitbucket", "/webhooks/", "/webhooks/GitHub"]))
    assert_answered(client, method, path, body, headers)


@SLOW
@given(request=requests(json_bodies, st.sampled_from(["right", "right", "missing", "garbled"])))
def test_random_json(client, request):
    assert_answered(client, *request)


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> tuple[str, str, bytes]:
    forge = draw(forges)
    event, document = draw(st.sampled_from(FIXTURE_PAYLOADS[forge]))
    text = json.dumps(draw(mutated(document, VOCABULARY[forge])))
    while json.dumps(DEEP) in text:
        text = text.replace(json.dumps(DEEP), draw(deep_json), 1)
    return forge, event, text.encode()


# Found by these tests (the sweep below) or while writing them, and kept.
@example(request=signed("github", "pull_request", {**payload("github/pull_request.opened"), "action": "edited",
                                                   "changes": ["base"]}))
@example(request=signed("github", "ping", {**payload("github/ping"), "zen": DEEP}))
@example(request=signed("gitlab", "Merge Request Hook",
                        replaced(payload("gitlab/merge_request.open"), ("object_attributes", "source", "git_http_url"), DEEP)))
@SLOW
@given(request=requests(mutated_fixtures(), st.sampled_from(["right"] * 8 + ["missing", "other-body"])))
def test_real_payloads_mutated(client, request):
    assert_answered(client, *request)


@pytest.mark.parametrize("forge, event, fixture", [("github", "push", "github/push.branch"),
                                                   ("gitlab", "Merge Request Hook", "gitlab/merge_request.open")])
def test_signed_real_payloads_are_queued(client, forge, event, fixture):
    """The properties above reach the queue: a signed, untouched real payload is queued."""
    body = json.dumps(payload(fixture)).encode()
    response = client.post(f"/webhooks/{forge}", data=body, headers={
        EVENT_HEADER[forge]: event, "X-GitHub-Delivery": fixture, "X-Gitlab-Event-UUID": fixture,
        **credentials(forge, body, "right", "")})
    assert response.status_code == 202, response.get_json()


ODD = {"null": None, "list": [], "mapping": {}, "huge": "x" * 100_000, "deep": DEEP}


@pytest.mark.parametrize("kind", list(ODD))
def test_each_field_of_each_real_payload_replaced(client, kind):
    """One node at a time, in every real payload, replaced by an odd value: every node in the
    nightly profile, every 25th in CI (a different sample for each value)."""
    odd, stride = ODD[kind], max(1, 5_000 // settings.default.max_examples)
    for forge, found in FIXTURE_PAYLOADS.items():
        for number, (event, document) in enumerate(found):
            for path in list(paths(document))[(number + list(ODD).index(kind)) % stride::stride]:
                assert_answered(client, *signed(forge, event, replaced(document, path, odd)))
