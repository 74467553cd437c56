"""Worker jobs: an event sealed for the worker function, authenticated before anything is read.

Anyone allowed to invoke the worker can hand it bytes, so a job carries an HMAC-SHA256 over
every field, keyed with a key derived from the app's token and aes_key, and checked in constant
time before the event is decrypted (with another key derived from the pair: encrypt-then-MAC).
The envelope (``dingtalk_fc_job``, ``sealed``, ``mac``) cannot be mistaken for DingTalk's
``{"encrypt": ...}`` body, and the MAC's input starts with its own label, so no DingTalk
signature or ciphertext can pass for a job. The idempotency key is taken from the decrypted
event, never from the job.

The same sealer keeps a failed-list item recovery rejected (DingTalk deleted it) in its log
record. What a blob is for (:data:`WORKER_JOB` or :data:`REJECTED_ITEM`) is its envelope's key
and its MAC's label, so an item can never be handed to the worker as a job, nor a job opened
as an item.
"""

import hmac
import json
import re

import dingtalk_crypto

from . import errors
from .errors import RequestRejected

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

JOB_VERSION = 1
MAC_PURPOSE = b"dingtalk-fc worker job mac v1"
ENCRYPTION_PURPOSE = b"dingtalk-fc worker job encryption v1"
# FC limits an asynchronous invocation's payload to 128 KB; a larger job is never deferred.
MAX_JOB_BYTES = 128 * 1024
# What a log record keeps sealed and ``redrive`` opens: a job too large for FC (run where it was
# pulled, see recovery.process) or a rejected item. The bound is the record's.
MAX_SEALED_TEXT_BYTES = 256 * 1024
TEXT_FIELDS = ("source", "request_id", "fingerprint", "sealed")
MAC_PATTERN = re.compile(r"[0-9a-f]{64}\Z")


class Purpose:
    """What a sealed blob is for: the key its envelope carries and the label its MAC input starts
    with (both differ between purposes)."""

    __slots__ = ("envelope", "label")

    def __init__(self, envelope: str, label: bytes) -> None:
        self.envelope = envelope
        self.label = label


WORKER_JOB = Purpose("dingtalk_fc_job", b"dingtalk-fc-job")
REJECTED_ITEM = Purpose("dingtalk_fc_item", b"dingtalk-fc-rejected-item")


class Job:
    """An opened job: the event's ``plaintext``, where it came from (``source``: push, recovery,
    redrive), the delivery's ``request_id`` and ``fingerprint`` (its signature, for the replay
    flag) and when it was sealed (``issued_ms``)."""

    __slots__ = ("fingerprint", "issued_ms", "plaintext", "request_id", "source")

    def __init__(self, plaintext: str, source: str, request_id: str, fingerprint: str, issued_ms: int) -> None:
        self.plaintext = plaintext
        self.source = source
        self.request_id = request_id
        self.fingerprint = fingerprint
        self.issued_ms = issued_ms


def _mac_input(fields: "Dict[str, Any]", purpose: Purpose) -> bytes:
    parts = [purpose.label, str(fields["issued_ms"]).encode("ascii")]
    parts.extend(str(fields[name]).encode("utf-8", "surrogatepass") for name in TEXT_FIELDS)
    return b"\x00".join(parts)


class JobSealer:
    """Seals jobs with the current key pair and opens jobs sealed with any configured pair."""

    def __init__(self, ciphers: "Sequence[dingtalk_crypto.DingTalkCrypto]", clock: "Callable[[], float]") -> None:
        self._ciphers = ciphers
        self._derived: Optional[List[Tuple[dingtalk_crypto.DingTalkCrypto, bytes]]] = None
        self._clock = clock

    @property
    def _keyed(self) -> "List[Tuple[dingtalk_crypto.DingTalkCrypto, bytes]]":
        """Per pair, encrypt-then-MAC keys derived from it: a sealed job is no DingTalk ciphertext,
        so it cannot be fed to the callback to learn anything about it. Derived at first use:
        two HMACs and two AES keys a pair, which a cold start that defers nothing need not pay."""
        if self._derived is None:  # computing it twice (two threads at once) is harmless
            self._derived = [
                (cipher.derive_cipher(ENCRYPTION_PURPOSE), cipher.derive_key(MAC_PURPOSE)) for cipher in self._ciphers
            ]
        return self._derived

    def seal(
        self, plaintext: str, source: str, request_id: str, fingerprint: str = "", purpose: Purpose = WORKER_JOB
    ) -> bytes:
        cipher, mac_key = self._keyed[0]
        fields: Dict[str, Any] = {
            purpose.envelope: JOB_VERSION,
            "issued_ms": int(self._clock() * 1000),
            "source": source,
            "request_id": request_id,
            "fingerprint": fingerprint,
            "sealed": cipher.encrypt(plaintext),
        }
        fields["mac"] = hmac.new(mac_key, _mac_input(fields, purpose), "sha256").hexdigest()
        return json.dumps(fields, separators=(",", ":")).encode("ascii")

    def open(self, payload: bytes, max_age_s: float, purpose: Purpose = WORKER_JOB) -> Job:
        """The job inside ``payload``; :class:`RequestRejected` unless it is authentic, sealed for
        ``purpose`` and young enough that the de-duplication store still remembers the event it
        carries."""
        fields = self._parse(payload, purpose)
        mac = _mac_input(fields, purpose)
        matching: List[dingtalk_crypto.DingTalkCrypto] = [
            cipher
            for cipher, mac_key in self._keyed
            if hmac.compare_digest(hmac.new(mac_key, mac, "sha256").hexdigest(), fields["mac"])
        ]
        if not matching:
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC)
        age_ms = self._clock() * 1000 - fields["issued_ms"]
        if age_ms > max_age_s * 1000:
            raise RequestRejected(errors.JOB_EXPIRED, detail=f"sealed {int(age_ms // 1000)} s ago")
        cipher = matching[0]
        try:
            plaintext = cipher.decrypt(fields["sealed"])
        except dingtalk_crypto.DecryptionError as error:  # authentic, so only a bug gets here
            raise RequestRejected.from_cipher_error(error) from None
        return Job(plaintext, fields["source"], fields["request_id"], fields["fingerprint"], fields["issued_ms"])

    @staticmethod
    def _parse(payload: bytes, purpose: Purpose) -> "Dict[str, Any]":
        if len(payload) > MAX_SEALED_TEXT_BYTES:
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC, detail="larger than any job")
        try:
            fields = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC, detail="not a JSON job") from None
        if not isinstance(fields, dict) or fields.get(purpose.envelope) != JOB_VERSION:
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC, detail="not a job envelope")
        issued = fields.get("issued_ms")
        if not isinstance(issued, int) or isinstance(issued, bool):
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC, detail="malformed job")
        if not all(isinstance(fields.get(name), str) for name in (*TEXT_FIELDS, "mac")):
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC, detail="malformed job")
        if not MAC_PATTERN.match(fields["mac"]):  # compare_digest refuses non-ASCII text
            raise RequestRejected(errors.JOB_NOT_AUTHENTIC, detail="malformed job")
        return fields
