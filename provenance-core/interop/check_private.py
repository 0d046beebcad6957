#!/usr/bin/env python3
"""Interop check of private mode (docs/FORMATS.md, "Private mode") against other people's code.

For every message of the committed vectors (testdata/vectors/private.json):

- pycose verifies the gateway's COSE_Sign1 over the ciphertext (the COSE_Encrypt bytes);
- cbor2 takes the COSE_Encrypt apart and builds the draft-ietf-cose-hpke Recipient_structure
  and the RFC 9052 Enc_structure from the format's text alone (nothing taken from the vectors);
- pyhpke (RFC 9180, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305) opens the
  content key of each recipient with that recipient's private key;
- cryptography's ChaCha20Poly1305 decrypts the content with it, bound to the gateway layer's
  protected header, and pycose verifies the sensor's COSE_Sign1 that comes out;

and each of these is refused: an outsider's key, a flipped ciphertext byte, a content moved
under another gateway header (other household or message number), a recipient header changed.

Run from anywhere: python3 provenance-core/interop/check_private.py
"""
import json
import pathlib
import sys

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "testdata" / "vectors"
SUITE = CipherSuite.new(
    KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
)
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


def split_envelope(envelope: bytes):
    """(gateway protected header bytes, COSE_Encrypt bytes) of a private envelope."""
    outer = cbor2.loads(envelope)
    assert outer.tag == 18
    protected, _unprotected, payload, _sig = outer.value
    return protected, payload


def open_content(content: bytes, external_aad: bytes, sk_bytes: bytes) -> bytes:
    enc = cbor2.loads(content)
    if enc.tag != 96:
        raise ValueError("not a COSE_Encrypt")
    protected, unprotected, ciphertext, recipients = enc.value
    if cbor2.loads(protected) != {1: 24}:
        raise ValueError("content alg is not ChaCha20/Poly1305")
    iv = unprotected[5]
    sk = SUITE.kem.deserialize_private_key(sk_bytes)
    kid = None
    errors = []
    for r_protected, r_unprotected, sealed_cek in recipients:
        header = cbor2.loads(r_protected)
        if header.get(1) != 50:
            raise ValueError("recipient alg is not HPKE-4-KE")
        # Recipient_structure = ["HPKE Recipient", next_layer_alg, protected, extra_info]
        info = cbor2.dumps(["HPKE Recipient", 24, r_protected, b""], canonical=True)
        try:
            # pyhpke has no single-shot Open: its recipient context, opened once, is the same.
            ctx = SUITE.create_recipient_context(r_unprotected[-4], sk, info=info)
            cek = ctx.open(sealed_cek, aad=b"")
            kid = header[4]
            break
        except Exception as e:  # not this recipient
            errors.append(e)
    else:
        raise ValueError("no recipient opens with this key")
    enc_structure = cbor2.dumps(["Encrypt", protected, external_aad], canonical=True)
    plain = ChaCha20Poly1305(cek).decrypt(iv, ciphertext, enc_structure)
    return plain, kid


def refused(fn) -> bool:
    try:
        fn()
        return False
    except (ValueError, InvalidTag, Exception):
        return True


def main():
    v = json.loads((VECTORS / "private.json").read_text())
    gw = v["gateway_public_key"]
    for m in v["messages"]:
        n = m["msg_seq"]
        envelope = bytes.fromhex(m["private_envelope"])
        try:
            outer = verify_sign1(envelope, gw)
            check(
                outer.payload == bytes.fromhex(m["content_cose_encrypt"]),
                f"message {n}: pycose verifies the gateway's signature over the ciphertext",
            )
        except Exception as e:
            check(False, f"message {n}: pycose verifies the gateway signature ({e})")
        protected, content = split_envelope(envelope)
        hdr = cbor2.loads(protected)
        check(
            hdr.get(3) == 96 and hdr.get(-65538) == v["household"] and hdr.get(-65539) == n,
            f"message {n}: the gateway header names COSE_Encrypt (96), the household and message number",
        )
        for r in v["recipients"]:
            try:
                plain, kid = open_content(content, protected, bytes.fromhex(r["private_key"]))
                check(
                    plain == bytes.fromhex(m["sensor_cose_sign1"]) and kid.hex() == r["kid"],
                    f"message {n}: pyhpke opens the content key of {r['name']}; the content decrypts to the sensor's bytes",
                )
                verify_sign1(plain, v["sensor_public_key"])
                check(True, f"message {n}: pycose verifies the decrypted sensor signature")
            except Exception as e:
                check(False, f"message {n}: {r['name']} opens it ({type(e).__name__}: {e})")
        alice = bytes.fromhex(v["recipients"][0]["private_key"])
        check(
            refused(lambda: open_content(content, protected, bytes.fromhex(v["outsider_private_key"]))),
            f"message {n}: an outsider's key opens nothing",
        )
        tampered = bytearray(content)
        tampered[40] ^= 1  # inside the content ciphertext
        check(
            refused(lambda: open_content(bytes(tampered), protected, alice)),
            f"message {n}: a flipped ciphertext byte does not decrypt",
        )
        for label, value in ((-65538, "HH-0002"), (-65539, n + 100)):
            moved = dict(hdr)
            moved[label] = value
            other = cbor2.dumps(moved, canonical=True)
            check(
                refused(lambda: open_content(content, other, alice)),
                f"message {n}: the content under another gateway header ({label}) does not decrypt",
            )
        enc = cbor2.loads(content)
        recips = [list(r) for r in enc.value[3]]
        for r in recips:
            h = cbor2.loads(r[0])
            h[4] = bytes(20)
            r[0] = cbor2.dumps(h, canonical=True)
        changed = cbor2.dumps(
            cbor2.CBORTag(96, [enc.value[0], enc.value[1], enc.value[2], recips]), canonical=True
        )
        check(
            refused(lambda: open_content(changed, protected, alice)),
            f"message {n}: a changed recipient header (kid) does not open (HPKE info binds it)",
        )
    if failures:
        print(f"\n{len(failures)} private-mode interop check(s) failed")
        sys.exit(1)
    print("\nprivate mode: every interop check passed")


if __name__ == "__main__":
    main()
