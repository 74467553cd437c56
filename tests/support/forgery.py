"""Hand-made DingTalk envelopes, to produce each kind of malformed ciphertext."""

import base64
import os
import struct

from Crypto.Cipher import AES


def forge(vector, body: bytes, pad=None, length=None, owner=None, pad_block=32) -> str:
    """Encrypt a hand-made plaintext layout, to produce each kind of malformed envelope."""
    owner_key = (owner if owner is not None else vector["owner_key"]).encode()
    layout = os.urandom(16) + struct.pack(">I", len(body) if length is None else length) + body + owner_key
    pad_value = pad_block - len(layout) % pad_block if pad is None else pad
    padded = layout + bytes([pad_value % 256]) * (pad_value if pad_value > 0 else 1)
    padded += b"\0" * (-len(padded) % 16)
    key = base64.b64decode(vector["aes_key"] + "=")
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(padded)).decode()
