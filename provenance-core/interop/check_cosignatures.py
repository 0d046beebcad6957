#!/usr/bin/env python3
"""An independent check of C2SP cosignatures, written from the specifications' text
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature) with Python's
`cryptography`, sharing no code with the Rust implementation.

    check_cosignatures.py WITNESS_VKEY LOG_VKEY NOTE_FILE...

Each NOTE_FILE is a checkpoint as the service publishes it or a witness stores it. For each, the
log's Ed25519 signature (type 0x01) and the witness's cosignature/v1 (type 0x04) must verify.
Prints one line per note; exits 1 if any fails.
"""
import base64
import hashlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EM_DASH = "\u2014"


def parse_vkey(vkey):
    """name+hex8+base64(type || key) -> (name, key id bytes, type, raw key)."""
    name, key_id_hex, blob = vkey.strip().split("+", 2)
    raw = base64.b64decode(blob, validate=True)
    key_type, key = raw[0], raw[1:]
    if len(key) != 32:
        raise ValueError("not an Ed25519 key")
    key_id = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + key).digest()[:4]
    if key_id.hex() != key_id_hex:
        raise ValueError(f"vkey {name}: key ID {key_id_hex} is not SHA-256(name||\\n||type||key)[:4]")
    return name, key_id, key_type, key


def split_note(note):
    """A signed note -> (text including its final newline, [(name, blob)])."""
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise ValueError("not a signed note")
    text += "\n"
    lines = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise ValueError(f"bad signature line {line!r}")
        name, b64 = line[2:].split(" ")
        lines.append((name, base64.b64decode(b64, validate=True)))
    return text, lines


def check(note, witness, log):
    text, sigs = split_note(note)
    origin, size, root = text.split("\n")[:3]
    if origin != log[0] or len(base64.b64decode(root)) != 32 or not size.isdigit():
        raise ValueError("not a checkpoint of this log")
    # The log's signature: Ed25519 over the text.
    found = [blob for name, blob in sigs if name == log[0] and blob[:4] == log[1]]
    if not found:
        raise ValueError("no signature by the log key")
    Ed25519PublicKey.from_public_bytes(log[3]).verify(found[0][4:], text.encode())
    # The cosignature: key ID || u64 big-endian timestamp || Ed25519 over
    # "cosignature/v1\ntime <ts>\n" || text.
    found = [blob for name, blob in sigs if name == witness[0] and blob[:4] == witness[1]]
    if not found:
        raise ValueError("no cosignature by the witness key")
    blob = found[0]
    if len(blob) != 4 + 8 + 64:
        raise ValueError("a cosignature/v1 is 76 bytes")
    ts = int.from_bytes(blob[4:12], "big")
    if ts >= 2**63:
        raise ValueError("timestamp above 2^63 - 1")
    message = f"cosignature/v1\ntime {ts}\n".encode() + text.encode()
    Ed25519PublicKey.from_public_bytes(witness[3]).verify(blob[12:], message)
    return int(size), ts


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    witness, log = parse_vkey(sys.argv[1]), parse_vkey(sys.argv[2])
    if witness[2] != 0x04 or log[2] != 0x01:
        sys.exit("the witness vkey must be of type 0x04 and the log's of type 0x01")
    failed = 0
    for path in sys.argv[3:]:
        with open(path, encoding="utf-8") as f:
            note = f.read()
        try:
            size, ts = check(note, witness, log)
            print(f"ok   {path}: size {size} cosigned by {witness[0]} at {ts}")
        except (ValueError, InvalidSignature) as e:
            failed += 1
            print(f"FAIL {path}: {e!r}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
