"""DingTalk's callback cipher: signature, AES-256-CBC envelope and the signed reply.

Byte-compatible with DingTalk, and checked against its published test vectors
(``tests/data/vectors.json``):

* ``key = b64decode(aes_key + "=")`` (32 bytes), ``iv = key[:16]``;
* plaintext = 16 random bytes | uint32 big-endian UTF-8 byte length | message | owner key,
  PKCS#7-padded to a 32-byte block, AES-256-CBC, standard base64 without line breaks;
* ``signature = sha1_hex("".join(sorted([token, timestamp, nonce, encrypt])))``.

Runs on Python 3.6 through 3.12: it is deployed to FC's ``python3`` runtime.
"""

import base64
import binascii
import hashlib
import hmac
import os
import struct
import threading
import time

from Crypto.Cipher import AES

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Callable, Dict, Optional

__all__ = [
    "DecryptionError",
    "DingTalkCrypto",
    "DingTalkCryptoError",
    "EncryptionError",
    "InvalidAesKeyError",
    "InvalidBase64Error",
    "InvalidCiphertextLengthError",
    "InvalidPaddingError",
    "InvalidPlaintextError",
    "LengthMismatchError",
    "OwnerKeyMismatchError",
    "SignatureMismatchError",
    "compute_signature",
]

AES_KEY_CHARS = 43
PAD_BLOCK = 32  # DingTalk pads to 32 bytes, not to AES's 16-byte block
RANDOM_PREFIX_BYTES = 16
LENGTH_FIELD = struct.Struct(">I")
HEADER_BYTES = RANDOM_PREFIX_BYTES + LENGTH_FIELD.size
REPLY_TEMPLATE = (
    '{{"msg_signature":"{msg_signature}","timeStamp":"{timeStamp}","nonce":"{nonce}","encrypt":"{encrypt}"}}'
)
NONCE_BYTES = 4  # 8 hex characters, the length DingTalk's own nonces have


class DingTalkCryptoError(Exception):
    """Base of every cipher failure; ``code`` is the official 9000xx error code."""

    code = 900000

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidAesKeyError(DingTalkCryptoError, ValueError):
    code = 900004


class SignatureMismatchError(DingTalkCryptoError):
    code = 900005


class EncryptionError(DingTalkCryptoError):
    code = 900007


class DecryptionError(DingTalkCryptoError):
    """The ``encrypt`` field is not a well-formed DingTalk ciphertext."""

    code = 900008


class InvalidBase64Error(DecryptionError):
    pass


class InvalidCiphertextLengthError(DecryptionError):
    pass


class InvalidPaddingError(DecryptionError):
    pass


class LengthMismatchError(DecryptionError):
    code = 900009


class InvalidPlaintextError(DecryptionError):
    code = 900001


class OwnerKeyMismatchError(DecryptionError):
    code = 900010


def compute_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """DingTalk's signature: SHA-1 hex over the four strings sorted and concatenated."""
    joined = "".join(sorted((token, timestamp, nonce, encrypt)))
    return hashlib.sha1(joined.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324 (the protocol's)


def decode_aes_key(aes_key: str) -> bytes:
    """The 32-byte AES key; accepts DingTalk's non-canonical keys, refuses anything else."""
    if not isinstance(aes_key, str) or len(aes_key) != AES_KEY_CHARS:
        raise InvalidAesKeyError("aes_key must be 43 characters")
    try:
        key = base64.b64decode(aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAesKeyError("aes_key is not base64") from None
    if len(key) != 32:
        raise InvalidAesKeyError("aes_key does not decode to 32 bytes")
    return key


def decode_base64_strictly(text: str) -> bytes:
    """Standard base64 with padding and nothing else: no line breaks, no stray characters.

    ``a2b_base64`` skips characters outside the alphabet and stops at padding; any such
    character makes the decoded length fall short of what the text's length promises, which is
    checked instead of ``b64decode(validate=True)``'s regex (several times slower on 1 KB).
    """
    try:
        data = binascii.a2b_base64(text)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidBase64Error("encrypt is not valid base64") from None
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    if len(text) % 4 or len(data) != len(text) // 4 * 3 - padding:
        raise InvalidBase64Error("encrypt is not valid base64")
    return data


def describe_owner_key(owner_key: bytes) -> str:
    """The shape of an owner key: its length and which kind of key it looks like.

    Never its characters: on a mismatch the "owner key" is whatever bytes the length field
    pointed at, so a forged length would otherwise print chosen bytes of the plaintext. The
    kind tells the usual misconfiguration (a CorpId where the AppKey was meant, a SuiteKey).
    """
    if owner_key.startswith(b"suite"):
        kind = "a SuiteKey"
    elif owner_key.startswith(b"ding"):
        kind = "an AppKey or CorpId"
    else:
        kind = "no known key"
    return f"{len(owner_key)} bytes, shaped like {kind}"


class _FixedIvCbc:
    """AES-256-CBC under one key and DingTalk's fixed IV, keyed once per process.

    ``AES.new`` costs more than the AES work of a callback-sized message, so one encryptor and
    one decryptor are kept. CBC chains every block on the previous ciphertext block, so only a
    message's first block depends on where a kept stream stood: encrypting, that block is XOR-ed
    with (last chained block XOR iv), which makes the stream behave exactly like a fresh one;
    decrypting, that block is DingTalk's random prefix, which nobody reads, and is dropped.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        iv = key[:16]
        self._iv = int.from_bytes(iv, "big")
        self._encryptor = AES.new(key, AES.MODE_CBC, iv)
        self._decryptor = AES.new(key, AES.MODE_CBC, iv)
        self._encryptor_chain = self._iv
        self._lock = threading.Lock()

    def encrypt(self, padded: bytes) -> bytes:
        with self._lock:
            first = int.from_bytes(padded[:16], "big") ^ self._iv ^ self._encryptor_chain
            out = self._encryptor.encrypt(first.to_bytes(16, "big") + padded[16:])
            self._encryptor_chain = int.from_bytes(out[-16:], "big")
        return out

    def decrypt_after_prefix(self, ciphertext: bytes) -> bytes:
        """The plaintext without its first block: DingTalk's 16 random bytes, which nobody reads.

        Only that first block depends on where the kept stream stood, so it is left unrepaired.
        """
        with self._lock:
            out = self._decryptor.decrypt(ciphertext)
        return out[RANDOM_PREFIX_BYTES:]


class DingTalkCrypto:
    """Verify, decrypt, encrypt and sign for one DingTalk app.

    ``owner_key`` is the trailer DingTalk appends to every plaintext: the AppKey (internal
    apps), the CorpId (callbacks registered with ``register_call_back``) or the SuiteKey
    (third-party apps). ``clock`` (seconds) and ``random_bytes`` are injectable for tests.
    """

    def __init__(
        self,
        token: str,
        aes_key: str,
        owner_key: str,
        clock: "Callable[[], float]" = time.time,
        random_bytes: "Callable[[int], bytes]" = os.urandom,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if not owner_key:
            raise ValueError("owner_key must not be empty")
        self._token = token
        self._owner_key = owner_key.encode("utf-8")
        self._cbc = _FixedIvCbc(decode_aes_key(aes_key))
        self._clock = clock
        self._random_bytes = random_bytes

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte key for ``purpose``, bound to both the aes_key and the token.

        HMAC-SHA256 keyed with the AES key: knowing a derived key reveals neither secret, and
        keys for different purposes are unrelated.
        """
        return hmac.new(self._cbc.key, purpose + b"\x00" + self._token.encode("utf-8"), hashlib.sha256).digest()

    def derive_cipher(self, purpose: bytes) -> "DingTalkCrypto":
        """The same envelope under a key derived for ``purpose``: a message sealed with it can
        never be submitted as (or decrypted like) one of the app's own."""
        aes_key = base64.b64encode(self.derive_key(purpose)).decode("ascii")[:AES_KEY_CHARS]
        return DingTalkCrypto(self._token, aes_key, self.owner_key, clock=self._clock, random_bytes=self._random_bytes)

    def __repr__(self) -> str:  # never show the token or the key
        return "DingTalkCrypto(owner_key={!r})".format(self._owner_key.decode("utf-8"))

    @property
    def owner_key(self) -> str:
        return self._owner_key.decode("utf-8")

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return compute_signature(self._token, timestamp, nonce, encrypt)

    def is_valid_signature(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> bool:
        expected = self.signature(timestamp, nonce, encrypt).encode("ascii")
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))

    def verify_signature(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise :class:`SignatureMismatchError` unless ``signature`` signs the other three."""
        if not self.is_valid_signature(signature, timestamp, nonce, encrypt):
            raise SignatureMismatchError("signature mismatch")

    def decrypt(self, encrypt: str) -> str:
        """The message inside a request's ``encrypt``; strict about every byte of the envelope."""
        ciphertext = decode_base64_strictly(encrypt)
        if len(ciphertext) < PAD_BLOCK or len(ciphertext) % AES.block_size:
            raise InvalidCiphertextLengthError("ciphertext length is not a valid block multiple")
        padded = self._cbc.decrypt_after_prefix(ciphertext)  # offsets below skip the prefix
        pad = padded[-1]
        if not 1 <= pad <= PAD_BLOCK or len(ciphertext) % PAD_BLOCK or padded[-pad:] != bytes((pad,)) * pad:
            raise InvalidPaddingError("invalid PKCS#7 padding")
        body_end = len(padded) - pad
        if body_end < LENGTH_FIELD.size:
            raise LengthMismatchError("plaintext shorter than its header")
        (length,) = LENGTH_FIELD.unpack_from(padded, 0)
        message_end = LENGTH_FIELD.size + length
        if message_end > body_end:
            raise LengthMismatchError("length field exceeds the plaintext")
        trailer = padded[message_end:body_end]
        if not hmac.compare_digest(trailer, self._owner_key):
            received, configured = describe_owner_key(trailer), describe_owner_key(self._owner_key)
            raise OwnerKeyMismatchError(f"owner key mismatch: received {received}, configured {configured}")
        try:
            return padded[LENGTH_FIELD.size : message_end].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPlaintextError("message is not valid UTF-8") from None

    def encrypt(self, message: str, random_prefix: "Optional[bytes]" = None) -> str:
        """``message`` as DingTalk's base64 ``encrypt``; ``random_prefix`` only for test vectors."""
        if random_prefix is None:
            random_prefix = self._random_bytes(RANDOM_PREFIX_BYTES)
        elif len(random_prefix) != RANDOM_PREFIX_BYTES:
            raise EncryptionError("random prefix must be 16 bytes")
        try:
            data = message.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            raise EncryptionError("message is not encodable as UTF-8") from None
        body_length = HEADER_BYTES + len(data) + len(self._owner_key)
        pad = PAD_BLOCK - body_length % PAD_BLOCK
        padded = b"".join((random_prefix, LENGTH_FIELD.pack(len(data)), data, self._owner_key, bytes((pad,)) * pad))
        return base64.b64encode(self._cbc.encrypt(padded)).decode("ascii")

    def new_nonce(self) -> str:
        return self._random_bytes(NONCE_BYTES).hex()

    def timestamp_ms(self) -> str:
        return str(int(self._clock() * 1000))

    def reply(
        self,
        message: str = "success",
        timestamp: "Optional[str]" = None,
        nonce: "Optional[str]" = None,
        random_prefix: "Optional[bytes]" = None,
    ) -> "Dict[str, str]":
        """The signed JSON object DingTalk expects back: exactly these four keys."""
        timestamp = self.timestamp_ms() if timestamp is None else timestamp
        nonce = self.new_nonce() if nonce is None else nonce
        encrypt = self.encrypt(message, random_prefix)
        return {
            "msg_signature": self.signature(timestamp, nonce, encrypt),
            "timeStamp": timestamp,
            "nonce": nonce,
            "encrypt": encrypt,
        }

    def reply_body(self, message: str = "success") -> bytes:
        """:meth:`reply` serialized for the HTTP body, on the hot path of every request.

        Formatted directly rather than through ``json``: every value is hex, digits or base64,
        which JSON strings hold without escaping, and the key order is fixed.
        """
        reply = self.reply(message)
        return REPLY_TEMPLATE.format(**reply).encode("ascii")
