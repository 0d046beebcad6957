//! Private mode: a sensor's signed reading encrypted end to end for a household's recipients,
//! countersigned by the gateway over the ciphertext (COSE-HPKE key encryption, RFC 9180, RFC
//! 9052).
//!
//! ```cddl
//! private-envelope = #6.18([                      ; COSE_Sign1, the gateway's
//!   protected: bstr .cbor { 1: -8,                ; EdDSA
//!                           3: 96,                ; content format: application/cose; cose-type="cose-encrypt"
//!                           4: bstr .size 20,     ; kid: the gateway's KeyId
//!                           -65537: uint,         ; received-at, Unix ms
//!                           -65538: household-id, ; the household the gateway serves
//!                           -65539: uint },       ; message number, strictly increasing per gateway
//!   unprotected: {},
//!   payload: bstr .cbor private-content,
//!   signature: bstr .size 64,
//! ])
//! private-content = #6.96([                       ; COSE_Encrypt
//!   protected: bstr .cbor { 1: 24 },              ; ChaCha20/Poly1305 with a 256-bit CEK
//!   unprotected: { 5: bstr .size 12 },            ; IV
//!   ciphertext: bstr,                             ; the sensor's COSE_Sign1, sealed, 16-byte tag
//!   recipients: [1*16 recipient],
//! ])
//! recipient = [
//!   protected: bstr .cbor { 1: 50,                ; HPKE-4-KE: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305
//!                           4: bstr .size 20 },   ; kid: the recipient key's KeyId
//!   unprotected: { -4: bstr .size 32 },           ; ek: HPKE enc
//!   ciphertext: bstr .size 48,                    ; the CEK sealed by HPKE (mode_base)
//! ]
//! ```
//!
//! The content layer's AAD is the RFC 9052 `Enc_structure` `["Encrypt", protected,
//! external_aad]` with `external_aad` = the gateway layer's protected header bytes, so the
//! ciphertext is bound to the gateway, time, household and message number the cloud sees. Each
//! recipient's HPKE `info` is the draft's `Recipient_structure` `["HPKE Recipient", 24,
//! recipient protected, h'']`; HPKE `aad` is empty.

use crate::cbor;
use crate::cose::{CoseError, SignedReading, RECEIVED_AT_LABEL};
use crate::keys::{self, KeyId};
use crate::reading::valid_device_id;
use alloc::{string::String, vec, vec::Vec};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use ciborium::value::Value;
use coset::{
    iana, CoseSign1, CoseSign1Builder, HeaderBuilder, Label, RegisteredLabel,
    RegisteredLabelWithPrivate, TaggedCborSerializable,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::{CryptoRng, RngCore};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};

/// COSE algorithm HPKE-4-KE (draft-ietf-cose-hpke): the recipient layer.
pub const ALG_HPKE_4_KE: i64 = 50;
/// COSE algorithm ChaCha20/Poly1305 (RFC 9053): the content layer.
pub const ALG_CHACHA20_POLY1305: i64 = 24;
/// CBOR tag of a COSE_Encrypt.
pub const COSE_ENCRYPT_TAG: u64 = 96;
/// CoAP content format of a COSE_Encrypt (`application/cose; cose-type="cose-encrypt"`).
pub const CONTENT_FORMAT_COSE_ENCRYPT: u64 = 96;
/// COSE header parameter `ek` (draft-ietf-cose-hpke): the HPKE encapsulated key.
pub const EK_LABEL: i64 = -4;
/// Private-use header label: the household, in the gateway layer.
pub const HOUSEHOLD_LABEL: i64 = -65538;
/// Private-use header label: the gateway's message number, in the gateway layer.
pub const MESSAGE_SEQ_LABEL: i64 = -65539;
/// Most recipients one message is encrypted to.
pub const MAX_RECIPIENTS: usize = 16;
/// Largest private envelope accepted.
pub const MAX_PRIVATE_ENVELOPE_LEN: usize = 8192;
/// The `Recipient_structure` context string.
pub const RECIPIENT_CONTEXT: &str = "HPKE Recipient";

type HpkeAead = hpke::aead::ChaCha20Poly1305;
type HpkeKdf = hpke::kdf::HkdfSha256;

const LAYER: &str = "private gateway layer";

/// Why a private message was refused or could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateError {
    /// Not the structure above (or not in its deterministic encoding).
    #[error("private message: {0}")]
    Malformed(&'static str),
    /// The gateway layer as a COSE_Sign1.
    #[error(transparent)]
    Cose(#[from] CoseError),
    /// An X25519 public key of small order (or not 32 bytes).
    #[error("not a usable X25519 public key")]
    BadRecipientKey,
    /// The message is not encrypted to this key.
    #[error("not encrypted to key {0}")]
    NotForMe(KeyId),
    /// HPKE or the content AEAD refused: the ciphertext, the headers it is bound to or the key
    /// do not match.
    #[error("does not decrypt: {0}")]
    Decrypt(&'static str),
}

/// A recipient's X25519 public key (its HPKE `pkR`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecipientKey(pub [u8; 32]);

impl core::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RecipientKey({})", hex::encode(self.0))
    }
}

impl RecipientKey {
    /// A 32-byte X25519 public key that is not of small order (a small-order key would make
    /// every shared secret zero: anyone could decrypt).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PrivateError> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| PrivateError::BadRecipientKey)?;
        // A clamped scalar is a multiple of 8, so it maps every point of order dividing 8 (all
        // of them, in any encoding) to zero.
        let probe = curve25519_dalek::montgomery::MontgomeryPoint(raw).mul_clamped([9u8; 32]);
        if probe.0 == [0u8; 32] {
            return Err(PrivateError::BadRecipientKey);
        }
        Ok(Self(raw))
    }

    /// `KeyId` = first 20 bytes of SHA-256 of the raw key, like every key here.
    pub fn key_id(&self) -> KeyId {
        let h = Sha256::digest(self.0);
        let mut id = [0u8; 20];
        id.copy_from_slice(&h[..20]);
        KeyId(id)
    }
}

/// A recipient's X25519 private key (its HPKE `skR`), with its public key computed once. Never
/// printed.
#[derive(Clone)]
pub struct RecipientSecret([u8; 32], RecipientKey);

impl core::fmt::Debug for RecipientSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RecipientSecret(…)")
    }
}

impl Drop for RecipientSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl RecipientSecret {
    /// From the 32 raw bytes (RFC 7748 scalar).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let sk = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&bytes)
            .unwrap_or_else(|_| unreachable!("32-byte X25519 scalar"));
        let pk = X25519HkdfSha256::sk_to_pk(&sk);
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&pk.to_bytes());
        Self(bytes, RecipientKey(raw))
    }

    /// Derives a key pair from input keying material (RFC 9180 `DeriveKeyPair`): test vectors
    /// and reproducible test keys.
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, _) = X25519HkdfSha256::derive_keypair(ikm);
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&sk.to_bytes());
        Self::from_bytes(raw)
    }

    /// A fresh key pair.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut ikm = [0u8; 32];
        rng.fill_bytes(&mut ikm);
        Self::derive(&ikm)
    }

    /// A fresh key pair from the operating system's randomness.
    #[cfg(feature = "std")]
    pub fn generate_os() -> Self {
        use rand_core_09::TryRngCore;
        Self::generate(&mut rand_core_09::OsRng.unwrap_err())
    }

    /// The raw private key bytes (to store in the owner's key file).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Its public key.
    pub fn public(&self) -> RecipientKey {
        self.1
    }

    fn hpke(&self) -> <X25519HkdfSha256 as Kem>::PrivateKey {
        // 32 bytes always deserialize as an X25519 scalar.
        <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&self.0)
            .unwrap_or_else(|_| unreachable!("32-byte X25519 scalar"))
    }
}

/// One decoded `COSE_recipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The recipient key's KeyId (protected `kid`).
    pub kid: KeyId,
    /// The HPKE encapsulated key (`ek`).
    pub ek: [u8; 32],
    protected: Vec<u8>,
    sealed_cek: Vec<u8>,
}

/// The decoded content layer (a COSE_Encrypt).
#[derive(Debug, Clone)]
pub struct PrivateContent {
    ciphertext: Vec<u8>,
    /// The content IV.
    pub iv: [u8; 12],
    /// Its recipients, in message order.
    pub recipients: Vec<Recipient>,
}

/// A decoded private envelope: what the cloud can see, and the content it cannot read.
#[derive(Debug, Clone)]
pub struct PrivateEnvelope {
    msg: CoseSign1,
    signature: Signature,
    /// The gateway's KeyId.
    pub kid: KeyId,
    /// When the gateway received the sensor's frame, Unix ms.
    pub received_at_ms: u64,
    /// The household.
    pub household: String,
    /// The gateway's message number.
    pub msg_seq: u64,
    /// The content layer.
    pub content: PrivateContent,
}

fn recipient_structure(protected: &[u8]) -> Vec<u8> {
    cbor::encode(&Value::Array(vec![
        Value::Text(RECIPIENT_CONTEXT.into()),
        Value::Integer(ALG_CHACHA20_POLY1305.into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
    ]))
}

/// The gateway layer's protected header of a private envelope.
fn gateway_header(kid: KeyId, received_at_ms: u64, household: &str, msg_seq: u64) -> coset::Header {
    HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .content_format(iana::CoapContentFormat::CoseEncrypt)
        .key_id(kid.0.to_vec())
        .value(RECEIVED_AT_LABEL, cbor::uint(received_at_ms))
        .value(HOUSEHOLD_LABEL, Value::Text(household.into()))
        .value(MESSAGE_SEQ_LABEL, cbor::uint(msg_seq))
        .build()
}

fn protected_bytes(h: coset::Header) -> Vec<u8> {
    use coset::AsCborValue;
    h.to_cbor_value()
        .map(|v| cbor::encode(&v))
        .unwrap_or_default()
}

/// What the gateway seals for a household: the facts the envelope will expose.
#[derive(Debug, Clone, Copy)]
pub struct Seal<'a> {
    /// The gateway's signing key.
    pub gateway: &'a SigningKey,
    /// When the frame was received, Unix ms.
    pub received_at_ms: u64,
    /// The household.
    pub household: &'a str,
    /// The gateway's next message number.
    pub msg_seq: u64,
}

impl Seal<'_> {
    /// [`Seal::seal`] with the operating system's randomness (a fresh content key, IV and HPKE
    /// ephemeral key for every message).
    #[cfg(feature = "std")]
    pub fn seal_os(
        &self,
        signed_reading: &[u8],
        recipients: &[RecipientKey],
    ) -> Result<Vec<u8>, PrivateError> {
        use rand_core_09::TryRngCore;
        self.seal(
            signed_reading,
            recipients,
            &mut rand_core_09::OsRng.unwrap_err(),
        )
    }

    /// Encrypts the sensor's COSE_Sign1 bytes (exactly as received) for every recipient and
    /// countersigns the ciphertext: the private envelope's bytes.
    pub fn seal<R: CryptoRng + RngCore>(
        &self,
        signed_reading: &[u8],
        recipients: &[RecipientKey],
        rng: &mut R,
    ) -> Result<Vec<u8>, PrivateError> {
        if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
            return Err(PrivateError::Malformed("1 to 16 recipients"));
        }
        if !valid_device_id(self.household) {
            return Err(PrivateError::Malformed("household id"));
        }
        let kid = KeyId::of(&self.gateway.verifying_key());
        let outer = gateway_header(kid, self.received_at_ms, self.household, self.msg_seq);
        let external_aad = protected_bytes(outer.clone());
        let mut cek = [0u8; 32];
        rng.fill_bytes(&mut cek);
        let mut iv = [0u8; 12];
        rng.fill_bytes(&mut iv);
        let mut recips = Vec::with_capacity(recipients.len());
        for r in recipients {
            let protected = recipient_protected(&r.key_id());
            let pk = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&r.0)
                .map_err(|_| PrivateError::BadRecipientKey)?;
            let (ek, sealed) = hpke::single_shot_seal::<HpkeAead, HpkeKdf, X25519HkdfSha256, _>(
                &OpModeS::Base,
                &pk,
                &recipient_structure(&protected),
                &cek,
                &[],
                rng,
            )
            .map_err(|_| PrivateError::BadRecipientKey)?;
            recips.push(Value::Array(vec![
                Value::Bytes(protected),
                Value::Map(vec![(int(EK_LABEL), Value::Bytes(ek.to_bytes().to_vec()))]),
                Value::Bytes(sealed),
            ]));
        }
        let ciphertext = ChaCha20Poly1305::new((&cek).into())
            .encrypt(
                (&iv).into(),
                Payload {
                    msg: signed_reading,
                    aad: &enc_structure(&content_protected(), &external_aad),
                },
            )
            .map_err(|_| PrivateError::Malformed("content too long"))?;
        zeroize::Zeroize::zeroize(&mut cek);
        let content = encode_content(&iv, ciphertext, recips);
        let msg = CoseSign1Builder::new()
            .protected(outer)
            .payload(content)
            .create_signature(&[], |tbs| self.gateway.sign(tbs).to_bytes().to_vec())
            .build();
        let bytes = msg
            .to_tagged_vec()
            .map_err(|_| PrivateError::Malformed("envelope"))?;
        if bytes.len() > MAX_PRIVATE_ENVELOPE_LEN {
            return Err(PrivateError::Malformed("envelope too long"));
        }
        Ok(bytes)
    }
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

/// `{1: 24}`: the content layer's protected header.
fn content_protected() -> Vec<u8> {
    cbor::encode(&Value::Map(vec![(int(1), int(ALG_CHACHA20_POLY1305))]))
}

/// `{1: 50, 4: kid}`: a recipient's protected header.
fn recipient_protected(kid: &KeyId) -> Vec<u8> {
    cbor::encode(&Value::Map(vec![
        (int(1), int(ALG_HPKE_4_KE)),
        (int(4), Value::Bytes(kid.0.to_vec())),
    ]))
}

/// RFC 9052 `Enc_structure` for a COSE_Encrypt.
fn enc_structure(protected: &[u8], external_aad: &[u8]) -> Vec<u8> {
    cbor::encode(&Value::Array(vec![
        Value::Text("Encrypt".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(external_aad.to_vec()),
    ]))
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

fn decode_recipient(v: &Value) -> Result<Recipient, PrivateError> {
    let bad = PrivateError::Malformed;
    let Value::Array(a) = v else {
        return Err(bad(
            "a recipient must be [protected, unprotected, ciphertext]",
        ));
    };
    let [p, u, c] = a.as_slice() else {
        return Err(bad(
            "a recipient must be [protected, unprotected, ciphertext]",
        ));
    };
    let protected = bytes_of(p).ok_or(bad("recipient protected header"))?;
    let kid = match cbor::decode_deterministic(protected, 64) {
        Ok(Value::Map(m)) => match m.as_slice() {
            [(a, alg), (k, Value::Bytes(kid))]
                if *a == int(1) && *alg == int(ALG_HPKE_4_KE) && *k == int(4) =>
            {
                KeyId::from_slice(kid)
            }
            _ => None,
        },
        _ => None,
    }
    .ok_or(bad(
        "recipient protected header must be exactly {1: 50 (HPKE-4-KE), 4: 20-byte kid}",
    ))?;
    let ek = match u {
        Value::Map(m) => match m.as_slice() {
            [(l, Value::Bytes(ek))] if *l == int(EK_LABEL) => {
                <[u8; 32]>::try_from(ek.as_slice()).ok()
            }
            _ => None,
        },
        _ => None,
    }
    .ok_or(bad(
        "recipient unprotected header must be exactly {-4: 32-byte ek}",
    ))?;
    let sealed_cek = bytes_of(c)
        .filter(|c| c.len() == 48)
        .ok_or(bad("recipient ciphertext must be the 48-byte sealed CEK"))?
        .to_vec();
    Ok(Recipient {
        kid,
        ek,
        protected: protected.to_vec(),
        sealed_cek,
    })
}

/// Encodes the content layer.
fn encode_content(iv: &[u8; 12], ciphertext: Vec<u8>, recipients: Vec<Value>) -> Vec<u8> {
    cbor::encode(&Value::Tag(
        COSE_ENCRYPT_TAG,
        alloc::boxed::Box::new(Value::Array(vec![
            Value::Bytes(content_protected()),
            Value::Map(vec![(int(5), Value::Bytes(iv.to_vec()))]),
            Value::Bytes(ciphertext),
            Value::Array(recipients),
        ])),
    ))
}

impl PrivateContent {
    /// Decodes the content layer (a tagged COSE_Encrypt in exactly the shape above, in
    /// deterministic encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self, PrivateError> {
        let bad = PrivateError::Malformed;
        let v = cbor::decode_deterministic(bytes, MAX_PRIVATE_ENVELOPE_LEN)
            .map_err(|_| bad("content: not deterministically encoded CBOR"))?;
        let Value::Tag(COSE_ENCRYPT_TAG, inner) = v else {
            return Err(bad("content must be a COSE_Encrypt (tag 96)"));
        };
        let Value::Array(a) = *inner else {
            return Err(bad("content must be a COSE_Encrypt array"));
        };
        let [p, u, c, r] = a.as_slice() else {
            return Err(bad(
                "content must be [protected, unprotected, ciphertext, recipients]",
            ));
        };
        if bytes_of(p) != Some(content_protected().as_slice()) {
            return Err(bad(
                "content protected header must be exactly {1: 24} (ChaCha20/Poly1305)",
            ));
        }
        let iv = match u {
            Value::Map(m) => match m.as_slice() {
                [(l, Value::Bytes(iv))] if *l == int(5) => <[u8; 12]>::try_from(iv.as_slice()).ok(),
                _ => None,
            },
            _ => None,
        }
        .ok_or(bad(
            "content unprotected header must be exactly {5: 12-byte IV}",
        ))?;
        let ciphertext = bytes_of(c)
            .filter(|c| c.len() >= 16)
            .ok_or(bad("content ciphertext must be attached"))?
            .to_vec();
        let Value::Array(rs) = r else {
            return Err(bad("recipients must be an array"));
        };
        if rs.is_empty() || rs.len() > MAX_RECIPIENTS {
            return Err(bad("1 to 16 recipients"));
        }
        let recipients = rs
            .iter()
            .map(decode_recipient)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, r) in recipients.iter().enumerate() {
            if recipients[..i].iter().any(|o| o.kid == r.kid) {
                return Err(bad("a recipient key twice"));
            }
        }
        Ok(Self {
            iv,
            ciphertext,
            recipients,
        })
    }

    /// The KeyIds it is encrypted to.
    pub fn recipient_kids(&self) -> Vec<KeyId> {
        self.recipients.iter().map(|r| r.kid).collect()
    }

    /// The ciphertext's length (the sealed COSE_Sign1 plus its 16-byte tag).
    pub fn ciphertext_len(&self) -> usize {
        self.ciphertext.len()
    }

    /// Opens the CEK with `secret` and decrypts the content bound to `external_aad`.
    fn open(&self, secret: &RecipientSecret, external_aad: &[u8]) -> Result<Vec<u8>, PrivateError> {
        let me = secret.public().key_id();
        let r = self
            .recipients
            .iter()
            .find(|r| r.kid == me)
            .ok_or(PrivateError::NotForMe(me))?;
        let ek = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&r.ek)
            .map_err(|_| PrivateError::Decrypt("ek"))?;
        let cek = hpke::single_shot_open::<HpkeAead, HpkeKdf, X25519HkdfSha256>(
            &OpModeR::Base,
            &secret.hpke(),
            &ek,
            &recipient_structure(&r.protected),
            &r.sealed_cek,
            &[],
        )
        .map_err(|_| PrivateError::Decrypt("HPKE refused the sealed content key"))?;
        let mut cek = zeroize::Zeroizing::new(cek);
        let key: [u8; 32] = cek
            .as_slice()
            .try_into()
            .map_err(|_| PrivateError::Decrypt("content key must be 32 bytes"))?;
        let key = zeroize::Zeroizing::new(key);
        let out = ChaCha20Poly1305::new((&*key).into())
            .decrypt(
                (&self.iv).into(),
                Payload {
                    msg: &self.ciphertext,
                    aad: &enc_structure(&content_protected(), external_aad),
                },
            )
            .map_err(|_| PrivateError::Decrypt("the content does not authenticate"));
        zeroize::Zeroize::zeroize(&mut *cek);
        out
    }
}

impl PrivateEnvelope {
    /// Decodes both layers' structure (not the signature, not the content).
    pub fn decode(bytes: &[u8]) -> Result<Self, PrivateError> {
        if bytes.len() > MAX_PRIVATE_ENVELOPE_LEN {
            return Err(CoseError::TooLong {
                what: LAYER,
                len: bytes.len(),
                max: MAX_PRIVATE_ENVELOPE_LEN,
            }
            .into());
        }
        let msg = CoseSign1::from_tagged_slice(bytes).map_err(|_| CoseError::Malformed(LAYER))?;
        let protected = msg
            .protected
            .original_data
            .as_deref()
            .ok_or(CoseError::Malformed(LAYER))?;
        if cbor::decode_deterministic(protected, 256).is_err()
            || msg.clone().to_tagged_vec().ok().as_deref() != Some(bytes)
        {
            return Err(CoseError::NotDeterministic(LAYER).into());
        }
        let h = &msg.protected.header;
        let header = |why| CoseError::Header { layer: LAYER, why };
        if h.alg != Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA)) {
            return Err(CoseError::Algorithm(LAYER).into());
        }
        if h.content_type
            != Some(RegisteredLabel::Assigned(
                iana::CoapContentFormat::CoseEncrypt,
            ))
        {
            return Err(header("content type must be COSE_Encrypt (96)").into());
        }
        if !h.crit.is_empty() || !h.iv.is_empty() || !h.partial_iv.is_empty() {
            return Err(header("unexpected header parameter").into());
        }
        let kid =
            KeyId::from_slice(&h.key_id).ok_or(header("kid must be a 20-byte key identifier"))?;
        let (received_at_ms, household, msg_seq) = match h.rest.as_slice() {
            [(Label::Int(RECEIVED_AT_LABEL), r @ Value::Integer(_)), (Label::Int(HOUSEHOLD_LABEL), Value::Text(hh)), (Label::Int(MESSAGE_SEQ_LABEL), s @ Value::Integer(_))] => {
                (cbor::as_u64(r), hh.clone(), cbor::as_u64(s))
            }
            _ => (None, String::new(), None),
        };
        let (Some(received_at_ms), Some(msg_seq)) = (received_at_ms, msg_seq) else {
            return Err(header("needs exactly received-at (-65537), household (-65538) and message number (-65539) besides alg, content type and kid").into());
        };
        if !valid_device_id(&household) {
            return Err(header("household id").into());
        }
        if !msg.unprotected.is_empty() || !msg.protected.header.counter_signatures.is_empty() {
            return Err(header("unprotected header must be empty").into());
        }
        let signature = keys::parse_signature(&msg.signature).ok_or(CoseError::Malformed(LAYER))?;
        let content = PrivateContent::decode(
            msg.payload
                .as_deref()
                .ok_or(header("payload must be attached"))?,
        )?;
        Ok(Self {
            msg,
            signature,
            kid,
            received_at_ms,
            household,
            msg_seq,
            content,
        })
    }

    /// Whether bytes look like a private envelope rather than a plain one: a tagged COSE_Sign1
    /// whose protected header starts `{1: -8, 3: 96, …}` (the deterministic order). It reads a
    /// few bytes only, so ingest can route every item by it; decoding decides.
    pub fn is_private(bytes: &[u8]) -> bool {
        // d2 84: tag 18, array(4); then the protected header's byte string head.
        let Some(rest) = bytes.strip_prefix(&[0xd2, 0x84]) else {
            return false;
        };
        let header = match rest.first() {
            Some(b @ 0x40..=0x57) => rest.get(1..1 + usize::from(b - 0x40)),
            Some(0x58) => rest.get(1).and_then(|n| rest.get(2..2 + usize::from(*n))),
            _ => None,
        };
        // a6: map(6); 01 27: alg EdDSA; 03 18 60: content format 96.
        header.is_some_and(|h| h.starts_with(&[0xa6, 0x01, 0x27, 0x03, 0x18, 0x60]))
    }

    /// The bytes the gateway signature covers and the signature, for batching.
    pub fn signed_data(&self) -> (Vec<u8>, Signature) {
        (self.msg.tbs_data(&[]), self.signature)
    }

    /// The content layer's bytes (what the gateway signed).
    pub fn content_bytes(&self) -> &[u8] {
        self.msg.payload.as_deref().unwrap_or_default()
    }

    /// Strictly verifies the gateway's signature over the ciphertext with `key`, which must
    /// match the `kid`.
    pub fn verify_gateway(&self, key: &VerifyingKey) -> Result<(), PrivateError> {
        if KeyId::of(key) != self.kid {
            return Err(CoseError::Header {
                layer: LAYER,
                why: "kid does not identify the given key",
            }
            .into());
        }
        if keys::verify_signature(key, &self.msg.tbs_data(&[]), &self.signature) {
            Ok(())
        } else {
            Err(CoseError::BadSignature(LAYER).into())
        }
    }

    /// Decrypts with the recipient's secret: the sensor's COSE_Sign1 bytes exactly as the
    /// gateway received them, decoded (the sensor's signature still to verify).
    pub fn open(&self, secret: &RecipientSecret) -> Result<(Vec<u8>, SignedReading), PrivateError> {
        let aad = self
            .msg
            .protected
            .original_data
            .as_deref()
            .unwrap_or_default();
        let plain = self.content.open(secret, aad)?;
        let sr = SignedReading::decode(&plain)?;
        Ok((plain, sr))
    }
}
