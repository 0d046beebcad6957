//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519 keys.
//!
//! A note is UTF-8 text of one or more non-empty lines, each ending in `\n`, then a blank line,
//! then one or more signature lines `— <key name> <base64(key hash ‖ signature)>\n` (U+2014).
//! The key hash is the first 4 bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`, and a
//! verifier key is written `<name>+<hex key hash>+<base64(0x01 ‖ public key)>` (a "vkey").
//! Opening a note succeeds when at least one known key signed it; signatures by unknown keys
//! (witness cosignatures, for example) are ignored, a bad signature by a known key is an error.

use crate::keys;
use alloc::{format, string::String, vec::Vec};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The Ed25519 signature type byte of signed notes.
const ALG_ED25519: u8 = 0x01;
/// Signature type of C2SP tlog-cosignature `cosignature/v1` (timestamped Ed25519) keys.
const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Most signature lines accepted in a note (as Go's `note` package).
pub const MAX_SIGNATURES: usize = 100;
/// Largest note accepted.
pub const MAX_NOTE_LEN: usize = 64 * 1024;

/// Why a note or key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed signed note.
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    /// No signature from any known key.
    #[error("note is not signed by any known key")]
    UnknownSigner,
    /// A known key's signature does not verify.
    #[error("invalid signature by key {0:?}")]
    BadSignature(String),
    /// A key name or vkey string is invalid.
    #[error("invalid key: {0}")]
    Key(&'static str),
}

/// A key name: non-empty, no whitespace, no `+`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The 4-byte key hash of an Ed25519 note key.
pub fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    key_hash_of(name, ALG_ED25519, key)
}

/// `SHA-256(name ‖ "\n" ‖ alg ‖ key)[:4]`.
fn key_hash_of(name: &str, alg: u8, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, alg]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The message a `cosignature/v1` signs: the header line, the timestamp line, then the note text.
fn cosigned_message(text: &str, timestamp: u64) -> String {
    alloc::format!("cosignature/v1\ntime {timestamp}\n{text}")
}

/// A witness (cosigner) key for C2SP tlog-cosignature `cosignature/v1`: Ed25519 over the note
/// text prefixed with `cosignature/v1` and the signing time; the signature line carries the
/// key id, the 8-byte big-endian timestamp and the signature.
pub struct Cosigner {
    name: String,
    key: SigningKey,
}

impl Cosigner {
    /// A cosigner named `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::Key("bad key name"));
        }
        Ok(Self {
            name: name.into(),
            key,
        })
    }

    /// Its verifier (a type 0x04 vkey).
    pub fn verifier(&self) -> NoteVerifier {
        let key = self.key.verifying_key();
        NoteVerifier {
            name: self.name.clone(),
            hash: key_hash_of(&self.name, ALG_COSIGNATURE_V1, &key),
            key,
            alg: ALG_COSIGNATURE_V1,
        }
    }

    /// Parses a cosigner key `PRIVATE+KEY+<name>+<hex key hash>+<base64(0x04 ‖ 32-byte seed)>`
    /// (the signer key format of Go's `sumdb/note` with the `cosignature/v1` type byte). It is a
    /// secret: errors never repeat it.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let (name, seed) = parse_skey(skey, ALG_COSIGNATURE_V1)?;
        let cosigner = Self::new(name, SigningKey::from_bytes(&seed))?;
        if skey_hash(skey) != Some(hex::encode(cosigner.verifier().hash)) {
            return Err(NoteError::Key(
                "signer key hash does not match its name and key",
            ));
        }
        Ok(cosigner)
    }

    /// The cosigner key string (see [`Cosigner::from_skey`]). A secret: never log it.
    pub fn to_skey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_COSIGNATURE_V1);
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.verifier().hash),
            B64.encode(raw)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cosignature line for a note's `text` at `timestamp` (Unix seconds; ends in `\n`).
    pub fn signature_line(&self, text: &str, timestamp: u64) -> String {
        let sig = self.key.sign(cosigned_message(text, timestamp).as_bytes());
        let mut blob = Vec::with_capacity(76);
        blob.extend_from_slice(&key_hash_of(
            &self.name,
            ALG_COSIGNATURE_V1,
            &self.key.verifying_key(),
        ));
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        alloc::format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

impl core::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the private key.
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Splits a signer key `PRIVATE+KEY+name+hash+base64(alg ‖ seed)` of type `alg` into its name
/// and seed (the hash is checked by the caller, which knows the key-hash rule of the type).
fn parse_skey(skey: &str, alg: u8) -> Result<(&str, [u8; 32]), NoteError> {
    let rest = skey
        .trim_end()
        .strip_prefix("PRIVATE+KEY+")
        .ok_or(NoteError::Key("signer key must start with PRIVATE+KEY+"))?;
    // Names cannot hold '+', base64 can: split from the left.
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(_hash), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(NoteError::Key(
            "signer key must be PRIVATE+KEY+name+hash+key",
        ));
    };
    let raw = B64
        .decode(key_b64)
        .map_err(|_| NoteError::Key("signer key is not base64"))?;
    match raw.split_first() {
        Some((&a, seed)) if a == alg => Ok((
            name,
            seed.try_into()
                .map_err(|_| NoteError::Key("signer key must hold a 32-byte Ed25519 seed"))?,
        )),
        _ => Err(NoteError::Key("signer key of another signature type")),
    }
}

/// The hex key hash field of a signer key string.
fn skey_hash(skey: &str) -> Option<String> {
    skey.trim_end()
        .strip_prefix("PRIVATE+KEY+")?
        .split('+')
        .nth(1)
        .map(String::from)
}

/// A note signer: a key name and an Ed25519 signing key. (`Clone` copies the key in memory,
/// as [`NoteSigner::renamed`] does; `Debug` never prints it.)
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl core::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the private key.
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// The same key signing under another name (a log's shards: [`crate::shard`]).
    pub fn renamed(&self, name: &str) -> Result<Self, NoteError> {
        Self::new(name, self.key.clone())
    }

    /// A signer for `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::Key(
                "key name must be non-empty without spaces or '+'",
            ));
        }
        Ok(Self {
            name: name.into(),
            key,
        })
    }

    /// Parses a signer key in the format of Go's `sumdb/note`:
    /// `PRIVATE+KEY+<name>+<hex key hash>+<base64(0x01 ‖ 32-byte seed)>`. It is a secret: errors
    /// never repeat it.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let (name, seed) = parse_skey(skey, ALG_ED25519)?;
        let signer = Self::new(name, SigningKey::from_bytes(&seed))?;
        if skey_hash(skey) != Some(hex::encode(key_hash(name, &signer.key.verifying_key()))) {
            return Err(NoteError::Key(
                "signer key hash does not match its name and key",
            ));
        }
        Ok(signer)
    }

    /// The signer key string (see [`NoteSigner::from_skey`]). It is a secret: never log it.
    pub fn to_skey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(key_hash(&self.name, &self.key.verifying_key())),
            B64.encode(raw)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            hash: key_hash(&self.name, &self.key.verifying_key()),
            key: self.key.verifying_key(),
            alg: ALG_ED25519,
        }
    }

    /// The signature line for `text` (without the trailing newline handling: ends in `\n`).
    pub fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_hash(&self.name, &self.key.verifying_key()));
        blob.extend_from_slice(&sig.to_bytes());
        format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }

    /// Signs `text` (which must be valid note text) into a complete signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        Ok(format!("{text}\n{}", self.signature_line(text)))
    }
}

/// A note verifier: a key name, key hash and Ed25519 public key, of a plain note signer (type
/// 0x01) or of a `cosignature/v1` witness (type 0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    hash: [u8; 4],
    key: VerifyingKey,
    alg: u8,
}

impl NoteVerifier {
    /// The same Ed25519 note key under another name (a log's shards: [`crate::shard`]).
    pub fn renamed(&self, name: &str) -> Result<Self, NoteError> {
        if self.alg != ALG_ED25519 {
            return Err(NoteError::Key("only a log's Ed25519 note key is renamed"));
        }
        if !valid_key_name(name) {
            return Err(NoteError::Key("bad key name"));
        }
        Ok(Self {
            name: name.into(),
            hash: key_hash(name, &self.key),
            key: self.key,
            alg: ALG_ED25519,
        })
    }

    /// Parses a vkey string `name+hex8+base64(type ‖ key)`, type 0x01 (Ed25519 note signer) or
    /// 0x04 (`cosignature/v1` witness).
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hash_hex), Some(key_b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::Key("vkey must be name+hash+key"));
        };
        if !valid_key_name(name) {
            return Err(NoteError::Key("bad key name"));
        }
        let hash: [u8; 4] = hex::decode(hash_hex)
            .ok()
            .filter(|_| hash_hex.len() == 8 && hash_hex.bytes().all(|b| !b.is_ascii_uppercase()))
            .and_then(|h| h.try_into().ok())
            .ok_or(NoteError::Key("key hash must be 8 lower-case hex digits"))?;
        let raw = B64
            .decode(key_b64)
            .map_err(|_| NoteError::Key("key is not base64"))?;
        let (alg, key) =
            match raw.split_first() {
                Some((&a, k)) if a == ALG_ED25519 || a == ALG_COSIGNATURE_V1 => (a, k),
                _ => return Err(NoteError::Key(
                    "only Ed25519 (type 0x01) and cosignature/v1 (type 0x04) keys are supported",
                )),
            };
        let key = keys::parse_public_key(key).ok_or(NoteError::Key("bad Ed25519 key"))?;
        if key_hash_of(name, alg, &key) != hash {
            return Err(NoteError::Key("key hash does not match name and key"));
        }
        Ok(Self {
            name: name.into(),
            hash,
            key,
            alg,
        })
    }

    /// The vkey string.
    pub fn to_vkey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(self.alg);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.hash),
            B64.encode(raw)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether this is a `cosignature/v1` (witness) key rather than a plain note signer's.
    pub fn is_cosigner(&self) -> bool {
        self.alg == ALG_COSIGNATURE_V1
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end with a newline"));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed("text must not contain blank lines"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "text must not contain control characters",
        ));
    }
    Ok(())
}

/// A signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key hash.
    pub hash: [u8; 4],
    /// Signature bytes (after the key hash).
    pub signature: Vec<u8>,
}

/// A note split into its text and signature lines (nothing verified yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitNote<'a> {
    /// The signed text, ending in `\n`.
    pub text: &'a str,
    /// The signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

/// Splits a signed note into its text and signatures, checking the syntax.
pub fn split(note: &str) -> Result<SplitNote<'_>, NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::Malformed("note too long"));
    }
    let at = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before signatures"))?;
    let (text, sigs) = (&note[..=at], &note[at + 2..]);
    check_text(text)?;
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::Malformed(
            "signature block must be non-empty lines ending in newline",
        ));
    }
    let mut signatures = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        if signatures.len() == MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
        let rest = line.strip_prefix("\u{2014} ").ok_or(NoteError::Malformed(
            "signature line must start with an em dash and a space",
        ))?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
            "signature line must be name and signature",
        ))?;
        if !valid_key_name(name) {
            return Err(NoteError::Malformed("bad key name in signature line"));
        }
        let blob = B64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(NoteError::Malformed("signature too short"));
        }
        signatures.push(NoteSignature {
            name: name.into(),
            hash: [blob[0], blob[1], blob[2], blob[3]],
            signature: blob[4..].to_vec(),
        });
    }
    Ok(SplitNote { text, signatures })
}

/// Opens a signed note: returns its text and the names of the `verifiers` that signed it.
/// Fails if none of them signed it, or if a signature by one of them is invalid.
pub fn open<'a>(
    note: &'a str,
    verifiers: &[&NoteVerifier],
) -> Result<(&'a str, Vec<String>), NoteError> {
    let parsed = split(note)?;
    let mut signed_by: Vec<String> = Vec::new();
    for sig in &parsed.signatures {
        let Some(v) = verifiers
            .iter()
            .find(|v| v.name == sig.name && v.hash == sig.hash)
        else {
            continue;
        };
        let ok = if v.alg == ALG_COSIGNATURE_V1 {
            // timestamped_signature: u64 big-endian timestamp ‖ Ed25519 signature.
            sig.signature.len() == 72
                && sig.signature[..8]
                    .try_into()
                    .ok()
                    .map(u64::from_be_bytes)
                    .is_some_and(|ts| {
                        ts < (1 << 63)
                            && keys::parse_signature(&sig.signature[8..]).is_some_and(|s| {
                                keys::verify_signature(
                                    &v.key,
                                    cosigned_message(parsed.text, ts).as_bytes(),
                                    &s,
                                )
                            })
                    })
        } else {
            keys::parse_signature(&sig.signature)
                .is_some_and(|s| keys::verify_signature(&v.key, parsed.text.as_bytes(), &s))
        };
        if !ok {
            return Err(NoteError::BadSignature(sig.name.clone()));
        }
        if !signed_by.contains(&v.name) {
            signed_by.push(v.name.clone());
        }
    }
    if signed_by.is_empty() {
        return Err(NoteError::UnknownSigner);
    }
    Ok((parsed.text, signed_by))
}
