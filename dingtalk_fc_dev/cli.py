"""``python -m dingtalk_fc_dev``: send DingTalk-style deliveries to a callback URL.

Keys come from DINGTALK_TOKEN, DINGTALK_AES_KEY and DINGTALK_APP_KEY, or the demo keys of
``make run`` when none is set. Exit status: 0 when every reply is DingTalk's encrypted
``success`` in time (or the function's 409 for an event still in progress, which is not a
failure: DingTalk retries it later), 1 when a reply is wrong, 2 for usage errors and
unreachable URLs.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import uuid
from typing import Any, Dict, List, Optional, TextIO
from urllib.parse import parse_qsl

from dingtalk_crypto import DingTalkCryptoError, InvalidAesKeyError
from dingtalk_fc.errors import EVENT_IN_FLIGHT

from . import catalog, recovery_cli
from .demo import credentials_from
from .testkit import DEADLINE_MS, Delivery, DingTalkSender, PostResult, ReplyError, expected_reply

DEFAULT_URL = "http://127.0.0.1:9000/"
EXIT_OK, EXIT_BAD_REPLY, EXIT_UNREACHABLE = 0, 1, 2


class CliError(Exception):
    """A failure reported as one line on stderr with exit status 2."""


def _sender() -> DingTalkSender:
    try:
        return DingTalkSender.from_environment(credentials_from(os.environ))
    except InvalidAesKeyError as error:
        raise CliError(f"DINGTALK_AES_KEY is invalid: {error}") from None
    except ValueError as error:
        raise CliError(str(error)) from None


def _parse_assignment(text: str) -> Any:
    name, separator, raw = text.partition("=")
    if not separator or not name:
        raise CliError(f"--set expects key=value, got {text!r}")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def _fresh_ids(plaintext: Dict[str, Any]) -> None:
    """New ids so that a repeated trigger is a new event, not a de-duplicated one."""
    if "eventId" in plaintext:
        plaintext["eventId"] = uuid.uuid4().hex
    if "BizId" in plaintext:
        plaintext["BizId"] = str(int(time.time() * 1000)) + uuid.uuid4().hex[:6]
    if "TimeStamp" in plaintext:
        plaintext["TimeStamp"] = str(int(time.time() * 1000))


def _expected_reply(sender: DingTalkSender, delivery: Delivery) -> str:
    """What DingTalk expects back for this delivery (``success`` unless a suite URL check)."""
    try:
        return expected_reply(sender.crypto.decrypt(json.loads(delivery.body)["encrypt"]))
    except (ValueError, KeyError, TypeError, DingTalkCryptoError):
        return "success"


def _in_flight(result: PostResult) -> bool:
    """The function's answer while the same event runs elsewhere (a worker, another instance)."""
    if result.status != EVENT_IN_FLIGHT.status:
        return False
    try:
        return json.loads(result.body.decode("utf-8")).get("errcode") == EVENT_IN_FLIGHT.errcode
    except (ValueError, AttributeError):
        return False


def _send(sender: DingTalkSender, url: str, delivery: Delivery, out: TextIO, label: str) -> int:
    try:
        result = sender.post(url, delivery)  # type: PostResult
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise CliError(f"cannot reach {url}: {reason}") from None
    if _in_flight(result):
        print(
            f"BUSY {label}: HTTP 409, this event is still in progress (a worker run or another instance);"
            f" DingTalk would retry it later ({result.latency_ms:.1f} ms)",
            file=out,
        )
        return EXIT_OK
    try:
        message = sender.check_reply(result.status, result.body)
    except ReplyError as error:
        print(f"FAIL {label}: {error} ({result.latency_ms:.1f} ms)", file=out)
        return EXIT_BAD_REPLY
    expected = _expected_reply(sender, delivery)
    if message != expected:
        print(f"FAIL {label}: reply decrypts to {message[:40]!r}, not {expected!r}", file=out)
        return EXIT_BAD_REPLY
    what = "encrypted success" if expected == "success" else "its Random value encrypted"
    print(f"OK   {label}: HTTP {result.status}, {what}, {result.latency_ms:.1f} ms", file=out)
    if result.latency_ms > DEADLINE_MS:
        print(f"WARN {label}: {result.latency_ms:.0f} ms is over DingTalk's {DEADLINE_MS} ms deadline", file=out)
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace, out: TextIO) -> int:
    try:
        plaintext = catalog.sample(args.event_type, "legacy" if args.legacy else args.variant)
    except KeyError as error:
        raise CliError(error.args[0]) from None
    if not args.keep_ids:
        _fresh_ids(plaintext)
    plaintext.update(_parse_assignment(item) for item in args.set)
    sender = _sender()
    return _send(sender, args.url, sender.build(plaintext), out, args.event_type)


def cmd_check_url(args: argparse.Namespace, out: TextIO) -> int:
    sender = _sender()
    return _send(sender, args.url, sender.build({"EventType": "check_url"}), out, "check_url")


def _read(value: str) -> str:
    if value.startswith("@"):
        with open(value[1:], "rb") as source:
            return _text(source.read(), value[1:])
    return value


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{recovery_cli.shown_path(where)}: not UTF-8") from None


def cmd_decrypt(args: argparse.Namespace, out: TextIO) -> int:
    query = _read(args.query).strip().lstrip("?")
    params = dict(parse_qsl(query.split("?", 1)[-1], keep_blank_values=True))
    try:
        encrypt = json.loads(_read(args.body))["encrypt"]
    except (ValueError, KeyError, TypeError, RecursionError):
        encrypt = None
    if not isinstance(encrypt, str):
        raise CliError('the body must be JSON like {"encrypt": "..."}')
    signature = params.get("msg_signature") or params.get("signature") or ""
    timestamp = params.get("timestamp") or params.get("timeStamp") or ""
    sender = _sender()
    if not sender.crypto.is_valid_signature(signature, timestamp, params.get("nonce", ""), encrypt):
        print("FAIL signature does not verify with the configured DINGTALK_TOKEN", file=out)
        return EXIT_BAD_REPLY
    try:
        print(sender.crypto.decrypt(encrypt), file=out)
    except DingTalkCryptoError as error:
        print(f"FAIL signature verifies but decryption fails ({error.code}): {error}", file=out)
        return EXIT_BAD_REPLY
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    """Each line of FILE: {"query": "<query string>", "body": "<raw JSON body>"}."""
    sender = _sender()
    worst = EXIT_OK
    shown = recovery_cli.shown_path(args.file)
    with open(args.file, "rb") as source:
        for number, raw in enumerate(source, 1):
            line = _text(raw, f"{args.file}:{number}")
            if not line.strip():
                continue
            try:
                captured = json.loads(line)
                delivery = Delivery(captured["query"], captured["body"].encode("utf-8"), {})
                if not args.as_captured:  # as DingTalk signs a redelivery: the function refuses
                    delivery = sender.sign(json.loads(captured["body"])["encrypt"])  # stale or replayed ones
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise CliError(f"{shown}:{number}: expected {{'query': ..., 'body': ...}}") from None
            worst = max(worst, _send(sender, args.url, delivery, out, f"{shown}:{number}"))
    return worst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dingtalk_fc_dev", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    trigger = commands.add_parser("trigger", help="send a catalog event, encrypted and signed")
    trigger.add_argument("event_type", help="an EventType from the catalog, e.g. user_add_org")
    trigger.add_argument("--url", default=DEFAULT_URL)
    trigger.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (JSON)")
    trigger.add_argument("--legacy", action="store_true", help="the older field spelling (UserId, TimeStamp)")
    trigger.add_argument("--keep-ids", action="store_true", help="keep the catalog's eventId/BizId")
    trigger.add_argument("--variant", help="a documented variant (see `events TYPE`), e.g. start, bookCancel")
    trigger.set_defaults(run=cmd_trigger)

    check_url = commands.add_parser("check-url", help="what DingTalk does when the URL is saved")
    check_url.add_argument("url")
    check_url.set_defaults(run=cmd_check_url)

    decrypt = commands.add_parser("decrypt", help="verify and decrypt a captured delivery")
    decrypt.add_argument("--query", required=True, help="the query string (or @FILE)")
    decrypt.add_argument("--body", required=True, help="the JSON body (or @FILE)")
    decrypt.set_defaults(run=cmd_decrypt)

    replay = commands.add_parser("replay", help="send captured deliveries again (JSON lines), signed afresh")
    replay.add_argument("file")
    replay.add_argument("--url", default=DEFAULT_URL)
    replay.add_argument(
        "--as-captured",
        action="store_true",
        help="keep each delivery's own timestamp, nonce and signature (default: re-sign with the current time)",
    )
    replay.set_defaults(run=cmd_replay)

    events = commands.add_parser("events", help="list the catalog's event types, or one type's fields")
    events.add_argument("event_type", nargs="?", help="print this type's fields, types, variants and doc URL")
    events.set_defaults(run=cmd_events)
    recovery_cli.add_commands(commands)  # recover, redrive
    return parser


def cmd_events(args: argparse.Namespace, out: TextIO) -> int:
    if args.event_type is None:
        for event_type in catalog.event_types():
            print(event_type, file=out)
        return EXIT_OK
    try:
        lines = catalog.describe(args.event_type)
    except KeyError as error:
        raise CliError(error.args[0]) from None
    print("\n".join(lines), file=out)
    return EXIT_OK


def main(argv: Optional[List[str]] = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, out)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OSError as error:
        print(f"error: {error.strerror or error}: {getattr(error, 'filename', '')}", file=sys.stderr)
        return EXIT_UNREACHABLE
