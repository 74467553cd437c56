"""DingTalk's side of a delivery, sans I/O: the query and body it sends, the signature and
cipher that open them, and the signed, encrypted reply it expects.

Nothing here keeps state between requests or knows about stores, handlers or FC.
"""

import json
import re

import dingtalk_crypto

from . import errors
from .errors import Problem, RequestRejected

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

MAX_QUERY_BYTES = 4096  # DingTalk's query is about 150 bytes: anything near this is not DingTalk
MAX_NONCE_CHARS = 64
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,16}\Z")  # milliseconds since the epoch


class Opened:
    """A verified delivery: the key pair that signed it (``cipher``, which signs the reply), its
    decrypted ``plaintext`` and its ``fingerprint`` (the signature, which covers timestamp and
    nonce: it tells an exact replay of a request from a redelivery of its event)."""

    __slots__ = ("cipher", "fingerprint", "plaintext")

    def __init__(self, cipher: dingtalk_crypto.DingTalkCrypto, plaintext: str, fingerprint: str) -> None:
        self.cipher = cipher
        self.plaintext = plaintext
        self.fingerprint = fingerprint


def parse_json(text: str, too_deep: Problem, invalid: Problem) -> "Any":
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestRejected(too_deep) from None
    except ValueError:
        raise RequestRejected(invalid) from None


def parse_query(query: str) -> "Tuple[str, str, str]":
    """``(signature, timestamp, nonce)``; either spelling DingTalk uses for each is accepted."""
    if len(query) > MAX_QUERY_BYTES:
        raise RequestRejected(errors.QUERY_TOO_LONG)
    params: Dict[str, str] = {}
    encoded = "%" in query or "+" in query  # DingTalk's own parameters never are
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if encoded:
            name, value = _unquote(name), _unquote(value)
        if name in params:
            raise RequestRejected(errors.REPEATED_PARAMETER, detail=name)
        params[name] = value
    signature = _one_of(params, "msg_signature", "signature", errors.MISSING_SIGNATURE)
    timestamp = _one_of(params, "timestamp", "timeStamp", errors.MISSING_TIMESTAMP)
    nonce = params.get("nonce", "")
    if not nonce:
        raise RequestRejected(errors.MISSING_NONCE)
    if not TIMESTAMP_PATTERN.match(timestamp):
        raise RequestRejected(errors.INVALID_TIMESTAMP)
    if len(nonce) > MAX_NONCE_CHARS:
        raise RequestRejected(errors.INVALID_NONCE)
    return signature, timestamp, nonce


def _unquote(component: str) -> str:
    """Form-decode a query component (``+`` and ``%XX``), as ``parse_qsl`` would."""
    from urllib.parse import unquote_plus  # only for unusual input: kept off the cold start

    return unquote_plus(component)


def _one_of(params: "Dict[str, str]", preferred: str, alternative: str, missing: Problem) -> str:
    first, second = params.get(preferred, ""), params.get(alternative, "")
    if first and second and first != second:
        raise RequestRejected(errors.REPEATED_PARAMETER, detail=preferred + "/" + alternative)
    value = first or second
    if not value:
        raise RequestRejected(missing)
    return value


def parse_object(text: str, not_object: Problem, field: str, missing: Problem) -> "Dict[str, Any]":
    """A JSON object with a non-empty string ``field``, or the matching refusal."""
    data = parse_json(text, errors.JSON_TOO_DEEP, not_object)
    if not isinstance(data, dict):
        raise RequestRejected(not_object)
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise RequestRejected(missing)
    return data


def shape_of(value: "Any") -> str:
    """What a value looks like, without its content (which may be personal data)."""
    if isinstance(value, str):
        return f"str of {len(value)} chars"
    return type(value).__name__


def parse_json_object(value: "Any", what: str) -> "Dict[str, Any]":
    """``value`` as a JSON object: one already, or its JSON text; refused as a plaintext is (too
    deep 900115, not an object 900112, with a ``detail`` naming ``what`` and its shape only).
    For events carried inside another document: failed-list items, SyncHTTP items."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:
            raise RequestRejected(errors.JSON_TOO_DEEP) from None
        except ValueError:
            raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail=what + " is not JSON") from None
    if not isinstance(value, dict):
        raise RequestRejected(errors.PLAINTEXT_NOT_OBJECT, detail=f"{what} is {shape_of(value)}")
    return value


def parse_encrypt(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRejected(errors.BODY_NOT_UTF8) from None
    return parse_object(text, errors.BODY_NOT_JSON, "encrypt", errors.MISSING_ENCRYPT)["encrypt"]


def parse_event(plaintext: str) -> "Dict[str, Any]":
    """The plaintext as DingTalk's event object: a JSON object with a string ``EventType``."""
    return parse_object(plaintext, errors.PLAINTEXT_NOT_OBJECT, "EventType", errors.MISSING_EVENT_TYPE)


class Wire:
    """Opens deliveries signed with any configured key pair and signs replies with the one that
    signed. ``clock`` (seconds since the epoch) is injectable for tests."""

    def __init__(
        self,
        ciphers: "Sequence[dingtalk_crypto.DingTalkCrypto]",
        timestamp_tolerance_s: int,
        clock: "Callable[[], float]",
    ) -> None:
        self._ciphers: List[dingtalk_crypto.DingTalkCrypto] = list(ciphers)
        self._tolerance_ms = timestamp_tolerance_s * 1000
        self._clock = clock

    def open(self, query: str, body: bytes) -> Opened:
        """Verify and decrypt one POST; :class:`RequestRejected` with its refusal otherwise.

        Every pair whose token verifies the signature is tried in turn (current first): a
        rotation may change the aes_key and keep the token. Every decryption failure answers the
        same (see :data:`errors.DECRYPTION_FAILED`: anything else would be a padding oracle).
        """
        signature, timestamp, nonce = parse_query(query)
        encrypt = parse_encrypt(body)
        first_error: Optional[dingtalk_crypto.DecryptionError] = None
        verified = False
        for cipher in self._ciphers:
            if not cipher.is_valid_signature(signature, timestamp, nonce, encrypt):
                continue
            if not verified:
                verified = True
                self._check_timestamp(timestamp)
            try:
                return Opened(cipher, cipher.decrypt(encrypt), signature)
            except dingtalk_crypto.DecryptionError as error:
                first_error = first_error or error
        if first_error is None:
            raise RequestRejected(errors.SIGNATURE_MISMATCH)
        raise RequestRejected.from_cipher_error(first_error) from None

    def _check_timestamp(self, timestamp: str) -> None:
        if self._tolerance_ms and abs(self._clock() * 1000 - int(timestamp)) > self._tolerance_ms:
            raise RequestRejected(errors.STALE_TIMESTAMP)
