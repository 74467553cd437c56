"""Configuration read once at start: a value that cannot work, or settings that together would
reopen a window for running an event twice, fail naming the variable."""

import logging

import pytest


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:63x9/0",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
        "redis://127.0.0.1:6379/0?socket_timeout=30",
        "redis://127.0.0.1:6379/0?retry_on_timeout=yes",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:6379/0?no_such_option=1",
        "redis://:6379/0",
    ],
)
def test_unusable_redis_url_is_a_configuration_error(make_harness, url):
    harness = make_harness(DINGTALK_DEDUP_REDIS_URL=url)
    harness.runtime.start()  # the initializer must not raise either
    for reply in (harness.call({"REQUEST_METHOD": "GET"}), harness.send({"EventType": "check_url"})):
        assert reply.status == 500
        assert reply.json == {"errcode": 900140, "errmsg": "function misconfigured"}
        assert harness.last_record["detail"].startswith("DINGTALK_DEDUP_REDIS_URL")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"DINGTALK_DEDUP_TTL_SECONDS": "60"}, "DINGTALK_DEDUP_TTL_SECONDS"),
        ({"DINGTALK_DEDUP_IN_FLIGHT_SECONDS": "300"}, "DINGTALK_DEDUP_IN_FLIGHT_SECONDS"),
        (
            {"DINGTALK_TIMESTAMP_TOLERANCE_SECONDS": "3600", "DINGTALK_DEDUP_IN_FLIGHT_SECONDS": "900"},
            "DINGTALK_DEDUP_IN_FLIGHT_SECONDS",
        ),
        ({"DINGTALK_REQUEST_BUDGET_MS": "1500"}, "DINGTALK_REQUEST_BUDGET_MS"),
        ({"DINGTALK_WORKER_FUNCTION": "worker", "DINGTALK_MAX_BODY_BYTES": "200000"}, "DINGTALK_MAX_BODY_BYTES"),
    ],
    ids=["TTL below tolerance", "lease not above tolerance", "wide tolerance", "budget too long", "body over job"],
)
def test_settings_that_would_reopen_a_window_are_refused(make_harness, environ, variable):
    harness = make_harness(**environ)
    reply = harness.send({"EventType": "check_url"})
    assert reply.status == 500
    assert harness.last_record["detail"].startswith(variable)


def test_a_retired_variable_is_warned_about_and_ignored(make_harness, caplog):
    harness = make_harness(DINGTALK_MAX_QUERY_BYTES="8192")
    with caplog.at_level(logging.WARNING, logger="dingtalk_fc"):
        harness.runtime.start()
    assert [r.getMessage() for r in caplog.records] == [
        "configuration: DINGTALK_MAX_QUERY_BYTES is no longer read: DingTalk's query is about 150 bytes, "
        "and 4096 is fixed"
    ]
    reply = harness.send({"EventType": "check_url"})
    assert harness.sender.check_reply(reply.status, reply.body) == "success"
