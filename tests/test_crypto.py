"""The cipher against DingTalk's published vectors, round trips, and every decrypt failure."""

import base64
import json
import os

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st
from support.forgery import forge

import dingtalk_crypto as dc

with open(os.path.join(os.path.dirname(__file__), "data", "vectors.json"), encoding="utf-8") as _source:
    VECTORS = json.load(_source)["vectors"]

A = VECTORS[0]


def crypto_for(vector, **kwargs):
    return dc.DingTalkCrypto(vector["token"], vector["aes_key"], vector["owner_key"], **kwargs)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector_decrypts_and_verifies(vector):
    crypto = crypto_for(vector)
    crypto.verify_signature(vector["signature"], vector["timestamp"], vector["nonce"], vector["encrypt"])
    assert crypto.decrypt(vector["encrypt"]) == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector_reencrypts_byte_identically(vector):
    crypto = crypto_for(vector)
    encrypt = crypto.encrypt(vector["plaintext"], random_prefix=vector["random_prefix"].encode())
    assert encrypt == vector["encrypt"]
    assert crypto.signature(vector["timestamp"], vector["nonce"], encrypt) == vector["signature"]


def test_vector_a_has_the_documented_prefix_and_padding():
    key = base64.b64decode(A["aes_key"] + "=")
    raw = AES.new(key, AES.MODE_CBC, key[:16]).decrypt(base64.b64decode(A["encrypt"]))
    assert raw[:16] == A["random_prefix"].encode()
    assert raw[-1] == 31
    assert raw[-31:] == bytes([31]) * 31


def test_kept_cipher_streams_match_fresh_ones_across_many_messages():
    """The encryptor and decryptor are kept between messages; each output must equal a fresh CBC."""
    crypto = crypto_for(A)
    key = base64.b64decode(A["aes_key"] + "=")
    for size in (0, 1, 15, 16, 17, 100, 1000, 5):
        message = "x" * size
        prefix = os.urandom(16)
        encrypt = crypto.encrypt(message, random_prefix=prefix)
        fresh = AES.new(key, AES.MODE_CBC, key[:16]).decrypt(base64.b64decode(encrypt))
        assert fresh[:16] == prefix
        assert crypto.decrypt(encrypt) == message


def test_non_canonical_aes_key_is_accepted():
    # The last character's discarded bits are non-zero: strict decoders refuse this key.
    assert base64.b64decode(A["aes_key"] + "=")  # Python's decoder accepts it, as DingTalk's does
    assert len(dc.decode_aes_key(A["aes_key"])) == 32


@pytest.mark.parametrize(
    ("aes_key", "message"),
    [
        ("", "43 characters"),
        (A["aes_key"][:-1], "43 characters"),
        (A["aes_key"] + "A", "43 characters"),
        ("!" * 43, "not base64"),
        ("Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ec=7", "not base64"),
    ],
)
def test_invalid_aes_key_is_refused_at_construction(aes_key, message):
    with pytest.raises(dc.InvalidAesKeyError, match=message) as raised:
        dc.DingTalkCrypto("token", aes_key, "owner")
    assert raised.value.code == 900004
    assert aes_key not in str(raised.value) or not aes_key


def test_signature_is_sorted_sha1_and_compared_in_full():
    crypto = crypto_for(A)
    assert crypto.is_valid_signature(A["signature"], A["timestamp"], A["nonce"], A["encrypt"])
    assert not crypto.is_valid_signature(A["signature"].upper(), A["timestamp"], A["nonce"], A["encrypt"])
    assert not crypto.is_valid_signature(A["signature"][:-1], A["timestamp"], A["nonce"], A["encrypt"])
    assert not crypto.is_valid_signature("é" * 40, A["timestamp"], A["nonce"], A["encrypt"])
    with pytest.raises(dc.SignatureMismatchError) as raised:
        crypto.verify_signature("0" * 40, A["timestamp"], A["nonce"], A["encrypt"])
    assert raised.value.code == 900005


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_of_arbitrary_unicode(message):
    crypto = crypto_for(A)
    encrypt = crypto.encrypt(message)
    assert "\n" not in encrypt
    assert crypto.decrypt(encrypt) == message


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65536, 65537, 200000])
@pytest.mark.parametrize("char", ["a", "é", "钉", "😀"])
def test_round_trip_at_boundary_byte_lengths(size, char):
    """Sizes are UTF-8 byte counts (the official sample used character counts)."""
    width = len(char.encode("utf-8"))
    message = char * (size // width) + "a" * (size % width)
    assert len(message.encode("utf-8")) == size
    crypto = crypto_for(A)
    encrypt = crypto.encrypt(message)
    raw = base64.b64decode(encrypt)
    assert len(raw) % 32 == 0
    assert crypto.decrypt(encrypt) == message


def test_reply_is_signed_13_digit_and_decrypts_to_success():
    crypto = crypto_for(A, clock=lambda: 1700000000.123)
    reply = crypto.reply()
    assert set(reply) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
    assert reply["timeStamp"] == "1700000000123"
    assert len(reply["nonce"]) == 8
    assert reply["nonce"].isalnum()
    assert crypto.is_valid_signature(reply["msg_signature"], reply["timeStamp"], reply["nonce"], reply["encrypt"])
    assert crypto.decrypt(reply["encrypt"]) == "success"
    assert crypto.reply()["nonce"] != reply["nonce"]


def test_repr_shows_no_secret():
    text = repr(crypto_for(A))
    assert A["token"] not in text
    assert A["aes_key"] not in text


# -- every decrypt failure, with its own type and code -----------------------------------------


def other_key_ciphertext(vector):
    other = dc.DingTalkCrypto("t0k", "Zm9yZXZlcnlvbmV3aG9yb3RhdGVzdGhlaXJrZXlzMDE", vector["owner_key"])
    return other.encrypt('{"EventType":"check_url"}')


DECRYPT_FAILURES = [
    ("not base64", lambda v: "@@@@", dc.InvalidBase64Error, 900008),
    ("base64 with a newline", lambda v: v["encrypt"][:40] + "\n" + v["encrypt"][40:], dc.InvalidBase64Error, 900008),
    ("bad base64 padding", lambda v: v["encrypt"][:-1], dc.InvalidBase64Error, 900008),
    ("shorter than a block", lambda v: base64.b64encode(b"x" * 16).decode(), dc.InvalidCiphertextLengthError, 900008),
    ("not a block multiple", lambda v: base64.b64encode(b"x" * 40).decode(), dc.InvalidCiphertextLengthError, 900008),
    ("pad byte zero", lambda v: forge(v, b"{}", pad=0), dc.InvalidPaddingError, 900008),
    ("pad larger than 32", lambda v: forge(v, b"{}" * 20, pad=33), dc.InvalidPaddingError, 900008),
    ("pad of 16 to a 16 block", lambda v: forge(v, b"{}", pad_block=16), dc.InvalidPaddingError, 900008),
    ("wrong key", other_key_ciphertext, dc.InvalidPaddingError, 900008),
    ("length beyond plaintext", lambda v: forge(v, b"{}", length=1000), dc.LengthMismatchError, 900009),
    ("length field of 2**32-1", lambda v: forge(v, b"{}", length=2**32 - 1), dc.LengthMismatchError, 900009),
    ("invalid UTF-8", lambda v: forge(v, b"\xff\xfe{}"), dc.InvalidPlaintextError, 900001),
    (
        "owner key of another app",
        lambda v: forge(v, b"{}", owner="dingotherapp00000000"),
        dc.OwnerKeyMismatchError,
        900010,
    ),
    ("owner key missing", lambda v: forge(v, b"{}", owner=""), dc.OwnerKeyMismatchError, 900010),
]


@pytest.mark.parametrize(
    ("make", "error", "code"), [row[1:] for row in DECRYPT_FAILURES], ids=[row[0] for row in DECRYPT_FAILURES]
)
def test_each_decrypt_failure_raises_its_own_error(make, error, code):
    crypto = crypto_for(A)
    with pytest.raises(error) as raised:
        crypto.decrypt(make(A))
    assert type(raised.value) is error
    assert raised.value.code == code
    assert isinstance(raised.value, dc.DecryptionError)


def test_owner_key_mismatch_describes_shapes_not_secrets():
    crypto = crypto_for(A)
    with pytest.raises(dc.OwnerKeyMismatchError) as raised:
        crypto.decrypt(forge(A, b"{}", owner="ding12345678901234567890"))
    message = str(raised.value)
    assert "received 24 bytes, shaped like an AppKey or CorpId" in message
    assert "configured 20 bytes, shaped like an AppKey or CorpId" in message
    assert "ding1234" not in message  # no character of what was received: it may be plaintext
    assert A["aes_key"] not in message
    assert A["token"] not in message


def test_decrypt_after_a_failure_still_works():
    """A refused ciphertext must not disturb the kept CBC streams."""
    crypto = crypto_for(A)
    for make in (lambda v: forge(v, b"{}", pad=0), other_key_ciphertext, lambda v: forge(v, b"\xff")):
        with pytest.raises(dc.DecryptionError):
            crypto.decrypt(make(A))
        assert crypto.decrypt(A["encrypt"]) == A["plaintext"]


def test_encrypting_a_lone_surrogate_fails_cleanly():
    with pytest.raises(dc.EncryptionError) as raised:
        crypto_for(A).encrypt("\ud800")
    assert raised.value.code == 900007


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=40), st.data())
def test_strict_base64_refuses_any_stray_character(raw, data):
    """Valid base64 decodes; one character outside the alphabet inserted anywhere is refused."""
    text = base64.b64encode(raw).decode()
    assert dc.decode_base64_strictly(text) == raw
    stray = data.draw(st.characters(codec="utf-8").filter(lambda c: c not in ALPHABET + "="))
    position = data.draw(st.integers(0, len(text)))
    with pytest.raises(dc.InvalidBase64Error):
        dc.decode_base64_strictly(text[:position] + stray + text[position:])


@pytest.mark.parametrize("text", ["QQ==QQ==", "QUJD=", "QUJ=D", "=QUJ", "QUJDRA=A", "QQ", "QUJDRA===", "Q==="])
def test_strict_base64_refuses_misplaced_or_missing_padding(text):
    with pytest.raises(dc.InvalidBase64Error):
        dc.decode_base64_strictly(text)
