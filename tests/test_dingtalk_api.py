"""The DingTalk API client against the local stub of both API generations, and failed-list
items of every shape turned into events."""

import json
import time

import pytest
from conftest import APP_SECRET
from stubs.dingtalk_api import LEGACY_SHAPES, DingTalkApiStub, legacy_item, v1_item

from dingtalk_fc import Event, dingtalk_api
from dingtalk_fc.dingtalk_api import ApiError, CredentialsRejected, DingTalkApi, Throttled, Unavailable
from dingtalk_fc.errors import RequestRejected
from dingtalk_fc.failed_items import event_from_item

APP_KEY = "dingappkeyfortests01"
EVENT = {"EventType": "user_add_org", "eventId": "ev-1", "CorpId": "dingcorp0001", "userId": ["u1"]}


@pytest.fixture
def stub():
    server = DingTalkApiStub(APP_KEY, APP_SECRET)
    yield server
    server.close()


def client(stub, generation, secret=APP_SECRET, clock=None, **options):
    extra = {"clock": clock} if clock else {}
    return DingTalkApi(APP_KEY, secret, generation, stub.base, stub.base, **extra, **options)


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_pages_until_the_list_is_empty_with_one_token(stub, generation):
    make = v1_item if generation == "v1" else legacy_item
    stub.add(*(make({**EVENT, "eventId": f"ev-{n}"}) for n in range(450)))
    api = client(stub, generation)
    pages = [api.failed_page()]
    while pages[-1].more:
        pages.append(api.failed_page())
    assert sum(len(page.items) for page in pages) == 450
    assert len(pages) == (5 if generation == "v1" else 3)
    assert api.token_requests == 1
    assert api.failed_page().items == []  # cleared on read


def test_v1_requests_look_like_dingtalks(stub):
    api = client(stub, "v1")
    api.failed_page()
    (token_call,) = stub.calls("/v1.0/oauth2/accessToken")
    assert token_call["method"] == "POST"
    assert token_call["headers"]["content-type"] == "application/json"
    (list_call,) = stub.calls("/v1.0/event/callbacks/failedResults")
    assert list_call["headers"]["x-acs-dingtalk-access-token"] in stub.tokens
    assert list_call["query"] == {}


def test_legacy_requests_look_like_dingtalks(stub):
    client(stub, "legacy").failed_page()
    (token_call,) = stub.calls("/gettoken")
    assert token_call["query"] == {"appkey": APP_KEY, "appsecret": APP_SECRET}
    (list_call,) = stub.calls("/call_back/get_call_back_failed_result")
    assert set(list_call["query"]) == {"access_token"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_token_is_cached_until_shortly_before_it_expires(stub, generation):
    clock = Clock()
    api = client(stub, generation, clock=clock)
    first = api.token()
    clock.now += 7200 - dingtalk_api.TOKEN_MARGIN_S - 1
    assert api.token() == first
    clock.now += 2
    assert api.token() != first
    assert api.token_requests == 2


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_a_refused_token_is_replaced_once(stub, generation):
    api = client(stub, generation)
    api.failed_page()
    stub.expire_tokens()  # DingTalk says: expired
    api.failed_page()
    assert api.token_requests == 2


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_a_token_refused_twice_is_an_error_not_a_loop(stub, generation, monkeypatch):
    api = client(stub, generation)
    original = stub._issue
    monkeypatch.setattr(stub, "_issue", lambda: original() + "-never-accepted")
    monkeypatch.setattr(stub, "tokens", type("Nothing", (set,), {"__contains__": lambda self, item: False})())
    with pytest.raises(dingtalk_api.TokenExpired):
        api.failed_page()
    assert api.token_requests == 2


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_a_bad_secret_is_a_credentials_error_without_the_secret(stub, generation):
    api = client(stub, generation, secret="WrongSecretValue123")
    with pytest.raises(CredentialsRejected) as raised:
        api.failed_page()
    assert "WrongSecretValue123" not in str(raised.value)
    assert len(stub.requests) == 1


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_throttling_and_server_errors_are_told_apart(stub, generation):
    api = client(stub, generation)
    api.token()
    stub.throttle_next = 1
    with pytest.raises(Throttled):
        api.failed_page()
    stub.fail_next = 1
    with pytest.raises(Unavailable):
        api.failed_page()


def test_a_slow_dingtalk_is_cut_off_by_the_timeout(stub):
    stub.delay_s = 1.0
    with pytest.raises(Unavailable):
        client(stub, "v1", timeout_s=0.2).token()


def test_an_unreachable_host_is_unavailable():
    api = DingTalkApi(APP_KEY, APP_SECRET, "v1", "http://127.0.0.1:9", "http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(Unavailable):
        api.token()


def test_a_trickling_answer_is_cut_off_by_the_callers_time_not_only_each_read(stub):
    """A socket timeout bounds each read: a byte every 0.2 s would hold the call for seconds."""
    api = client(stub, "v1", timeout_s=5)
    api.token()
    stub.trickle_s = 0.2
    started = time.monotonic()
    with pytest.raises(Unavailable):
        api.failed_page(timeout_s=0.5)  # what the recovery run has left
    assert time.monotonic() - started < 1.5


def test_a_malformed_status_line_is_unavailable(stub):
    stub.garbage_next = 1
    with pytest.raises(Unavailable):
        client(stub, "v1").token()


@pytest.mark.parametrize("generation", dingtalk_api.GENERATIONS)
def test_a_redirect_is_refused_and_the_token_goes_nowhere_else(stub, generation):
    elsewhere = DingTalkApiStub(APP_KEY, APP_SECRET)
    try:
        stub.redirect_to = elsewhere.base.replace("127.0.0.1", "localhost") + "/v1.0/event/callbacks/failedResults"
        with pytest.raises(ApiError) as raised:
            client(stub, generation).failed_page()
        assert (raised.value.kind, raised.value.status) == ("refused", 302)
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


# -- items -------------------------------------------------------------------------------------

MAX = 64 * 1024


@pytest.mark.parametrize("shape", sorted(LEGACY_SHAPES))
def test_every_legacy_shape_gives_the_pushed_event(shape):
    event = event_from_item(legacy_item(EVENT, shape), MAX)
    assert event.type == "user_add_org"
    assert event.key == "ev-1"
    assert event.get("userId") == ["u1"]
    assert event.corp_id == "dingcorp0001"


def test_v1_and_isv_items_give_the_pushed_event():
    for item in (
        v1_item(EVENT),
        {"id": 7, "call_back_tag": "user_add_org", "call_back_data": json.dumps(EVENT), "corpid": "dingcorp0001"},
    ):
        event = event_from_item(item, MAX)
        assert (event.type, event.key, event.corp_id) == ("user_add_org", "ev-1", "dingcorp0001")


def test_an_item_without_ids_gets_the_same_digest_key_from_either_generation():
    legacy = {"EventType": "user_modify_org", "UserId": ["u2"]}
    from_v1 = event_from_item(v1_item(legacy), MAX)
    from_legacy = event_from_item(legacy_item(legacy), MAX)
    assert from_v1.data["CorpId"] == "dingcorp0001"
    assert from_v1.key.startswith("sha256:")
    assert from_v1.key == Event.from_data(dict(reversed(list(from_v1.data.items())))).key  # order-free
    assert from_legacy.key.startswith("sha256:")
    assert event_from_item(v1_item(legacy), MAX).key == from_v1.key


@pytest.mark.parametrize(
    ("item", "errcode"),
    [
        ("not an object", 900112),
        ({"callBackTag": "user_add_org", "callBackData": "{not json"}, 900112),
        ({"callBackTag": "user_add_org", "callBackData": "[1, 2]"}, 900112),
        ({"callBackData": "{}"}, 900113),
        ({"callBackTag": 42, "callBackData": "{}"}, 900113),
        ({"callBackTag": "no such tag!", "callBackData": "{}"}, 900113),
        ({"callBackTag": "check_url", "callBackData": "{}"}, 900113),
        ({"callBackTag": "user_add_org", "callBackData": json.dumps({"EventType": "org_remove"})}, 900113),
        ({"call_back_tag": "user_add_org", "event_time": 1}, 900112),
        ({"callBackTag": "user_add_org", "callBackData": json.dumps({"x": "y" * MAX})}, 900107),
        ({"callBackTag": "user_add_org", "callBackData": "[" * 100000 + "]" * 100000}, 900107),
        ({"callBackTag": "user_add_org", "callBackData": "[" * 5000 + "]" * 5000}, 900115),
    ],
    ids=[
        "not an object",
        "data not JSON",
        "data not an object",
        "no tag",
        "tag not a string",
        "tag not a name",
        "a URL check",
        "tag and EventType differ",
        "no data",
        "huge data",
        "huge nesting",
        "deep nesting",
    ],
)
def test_malformed_items_are_refused_with_the_push_errcodes(item, errcode):
    with pytest.raises(RequestRejected) as raised:
        event_from_item(item, MAX)
    assert raised.value.problem.errcode == errcode


def test_an_item_with_a_lone_surrogate_gives_an_ascii_plaintext():
    """Valid JSON (a push may carry it too); the plaintext must still encrypt as UTF-8."""
    event = event_from_item(v1_item({**EVENT, "nickname": "\ud800"}), MAX)
    assert event.get("nickname") == "\ud800"
    assert event.plaintext.isascii()


def test_a_tag_nobody_registered_is_still_an_event():
    assert event_from_item(v1_item({"EventType": "some_future_event", "eventId": "f1"}), MAX).type == (
        "some_future_event"
    )
