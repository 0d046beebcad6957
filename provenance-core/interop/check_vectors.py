#!/usr/bin/env python3
"""Interop check of the committed test vectors against other people's implementations.

- pycose (Python COSE) decodes and verifies both COSE_Sign1 layers of every vector reading:
  the sensor's signature over the reading, and the gateway's over the sensor's exact bytes.
- `cryptography` (OpenSSL's Ed25519) verifies the C2SP signed-note checkpoint signature and
  hashlib recomputes every RFC 9162 leaf hash.
- The registry commitment, recomputed here from docs/FORMATS.md alone ("Registry commitment":
  subject chains, the sparse Merkle map, the checkpoint's registry line) with `cbor2` and
  `cryptography`'s X.509 parser: the checkpoint's root from every registry event of the log,
  and every subject proof of the evidence bundle.

Run from anywhere: python3 provenance-core/interop/check_vectors.py
Exit status 0 if everything verifies and every tampered copy is rejected, 1 otherwise.
"""
import base64
import hashlib
import json
import pathlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message
from pycose.algorithms import EdDSA

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "testdata" / "vectors"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def verify_sign1(data: bytes, public_key_hex: str) -> Sign1Message:
    msg = Sign1Message.decode(data)
    msg.key = OKPKey(crv=Ed25519, x=bytes.fromhex(public_key_hex))
    if not msg.verify_signature():
        raise ValueError("signature does not verify")
    return msg


def rejects(data: bytes, public_key_hex: str) -> bool:
    try:
        verify_sign1(data, public_key_hex)
    except Exception:  # noqa: BLE001 - any failure to decode or verify is a rejection
        return True
    return False


readings = json.loads((VECTORS / "readings.json").read_text())["readings"]
check(len(readings) >= 3, f"{len(readings)} vector readings present")
for r in readings:
    seq = r["seq"]
    sensor = bytes.fromhex(r["sensor_cose_sign1"])
    envelope = bytes.fromhex(r["gateway_envelope"])
    check(sensor[0] == 0xD2 and envelope[0] == 0xD2, f"seq {seq}: both layers carry COSE_Sign1 tag 18")

    inner = verify_sign1(sensor, r["sensor_public_key"])
    check(inner.phdr.get(Algorithm) is EdDSA or inner.phdr.get(Algorithm) == EdDSA,
          f"seq {seq}: sensor layer alg is EdDSA")
    check(inner.phdr.get(KID) == bytes.fromhex(r["sensor_kid"]), f"seq {seq}: sensor kid matches")
    check(inner.payload == bytes.fromhex(r["reading_cbor"]), f"seq {seq}: sensor payload is the reading CBOR")
    check(inner.phdr.get(ContentType) == "application/vnd.vitals-ledger.reading+cbor",
          f"seq {seq}: sensor content type")

    outer = verify_sign1(envelope, r["gateway_public_key"])
    check(outer.phdr.get(KID) == bytes.fromhex(r["gateway_kid"]), f"seq {seq}: gateway kid matches")
    check(outer.payload == sensor, f"seq {seq}: envelope payload is the sensor's exact bytes")
    check(outer.phdr.get(ContentType) == 18, f"seq {seq}: envelope content type is COSE_Sign1 (18)")
    check(outer.phdr.get(-65537) == r["gateway_received_at_ms"], f"seq {seq}: received-at header")

    # Negative cases: a flipped signature bit, or the other layer's key, must fail in pycose too.
    tampered = bytearray(envelope)
    tampered[-1] ^= 1
    check(rejects(bytes(tampered), r["gateway_public_key"]), f"seq {seq}: pycose rejects a tampered gateway signature")
    check(rejects(sensor, r["gateway_public_key"]), f"seq {seq}: pycose rejects the sensor layer under the gateway key")

log = json.loads((VECTORS / "log.json").read_text())
for leaf in log["leaves"]:
    data = bytes.fromhex(leaf["leaf_data"])
    check(hashlib.sha256(b"\x00" + data).hexdigest() == leaf["leaf_hash"], f"leaf {leaf['index']}: RFC 9162 leaf hash")

# C2SP signed note: vkey = name+hex(keyhash)+base64(0x01||pubkey); signature line = — name base64(keyhash||sig).
name, key_hash_hex, key_b64 = log["vkey"].split("+", 2)
raw = base64.b64decode(key_b64)
check(raw[0] == 1 and len(raw) == 33, "vkey is an Ed25519 note key")
check(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_hash_hex, "vkey key hash")
pub = Ed25519PublicKey.from_public_bytes(raw[1:])
note = log["checkpoint"]
text, sigs = note.rsplit("\n\n", 1)
text += "\n"
line = sigs.strip().split("\n")[0]
check(line.startswith("\u2014 " + name + " "), "checkpoint signature line names the log")
blob = base64.b64decode(line.split(" ")[2])
check(blob[:4].hex() == key_hash_hex, "checkpoint signature key hash")
try:
    pub.verify(blob[4:], text.encode())
    check(True, "checkpoint signature verifies with OpenSSL's Ed25519")
except InvalidSignature:
    check(False, "checkpoint signature verifies with OpenSSL's Ed25519")
try:
    origin, size, rest = text.split("\n", 2)
    pub.verify(blob[4:], f"{origin}\n{int(size) + 1}\n{rest}".encode())
    check(False, "a checkpoint with a changed size is rejected")
except InvalidSignature:
    check(True, "a checkpoint with a changed size is rejected")


# --- The registry commitment (docs/FORMATS.md, "Registry commitment"), independently. ---
import cbor2
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import serialization


def sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def cert_of(der):
    c = x509.load_der_x509_certificate(der)
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    raw = c.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return cn, sha(raw)[:20].hex()


def subjects_of(entries):
    """(index, leaf hash, subject name) of every registry event, by FORMATS.md's rules."""
    owner = {}  # key id hex -> subject name
    out = []
    for idx, leaf in entries:
        entry = cbor2.loads(leaf)
        if entry[1] != 2:
            continue
        ev = cbor2.loads(entry[2])
        t = ev[1]
        if t == 1:
            _, kid = cert_of(ev[2])
            name = "issuer:" + kid
            owner[kid] = name
        elif t in (2, 3):
            cn, kid = cert_of(ev[2])
            name = "device:" + cn
            owner[kid] = name
        elif t in (4, 5):
            name = "device:" + ev[3]
        elif t == 6:
            cn, kid = cert_of(ev[2])
            name = "device:" + ev[3]
            owner[kid] = name
        else:
            name = owner[ev[8].hex()]
        out.append((idx, sha(b"\x00", leaf), name))
    return out


def chain_values(events):
    chains = {}
    for idx, lh, name in sorted(events):
        count, acc = chains.get(name, (0, bytes(32)))
        chains[name] = (count + 1, sha(b"\x02", acc, idx.to_bytes(8, "big"), lh))
    return {
        sha(b"vitals-ledger registry subject\n", name.encode()): sha(b"\x03", c.to_bytes(8, "big"), a)
        for name, (c, a) in chains.items()
    }


def bit(key, d):
    return (key[d // 8] >> (7 - d % 8)) & 1


def smt_root(items, d=0):
    if not items:
        return bytes(32)
    if len(items) == 1:
        (k, v), = items
        return sha(b"\x00", k, v)
    left = [(k, v) for k, v in items if not bit(k, d)]
    right = [(k, v) for k, v in items if bit(k, d)]
    return sha(b"\x01", smt_root(left, d + 1), smt_root(right, d + 1))


def smt_verify(root, key, value, siblings):
    h = sha(b"\x00", key, value)
    for d in reversed(range(len(siblings))):
        h = sha(b"\x01", siblings[d], h) if bit(key, d) else sha(b"\x01", h, siblings[d])
    return h == root


def registry_line(note_text):
    lines = [l for l in note_text.split("\n\n")[0].split("\n") if l.startswith("vitals-ledger/registry/v1 ")]
    _, count, root = lines[0].split(" ")
    return int(count), base64.b64decode(root)


log_entries = [(l["index"], bytes.fromhex(l["leaf_data"])) for l in log["leaves"]]
events = subjects_of(log_entries)
count, root = registry_line(log["checkpoint"])
check(count == len(events), f"registry line counts the log's {len(events)} registry events")
values = chain_values(events)
check(smt_root(sorted(values.items())) == root, "the registry map root recomputed from the log's events")
bundle = json.loads((VECTORS / "bundle.json").read_text())
b_entries = []
for e in bundle["registry"]:
    idx = int(e["proof"].split("\n")[1].split(" ")[1])
    b_entries.append((idx, base64.b64decode(e["leaf_data"])))
b_values = chain_values(subjects_of(b_entries))
note_of_bundle = bundle["reading"]["proof"].split("\n\n", 1)[1]
_, b_root = registry_line(note_of_bundle)
for p in bundle["registry_proofs"]:
    key = sha(b"vitals-ledger registry subject\n", p["subject"].encode())
    sib = [base64.b64decode(h) for h in p["hashes"]]
    check(key in b_values and smt_verify(b_root, key, b_values[key], sib), f"bundle proves the history of {p['subject']}")
    if key in b_values:
        check(not smt_verify(b_root, key, sha(b"tampered"), sib), f"a changed history of {p['subject']} is refused")

if failures:
    print(f"\n{len(failures)} interop check(s) failed", file=sys.stderr)
    sys.exit(1)
print("\nall interop checks passed")
