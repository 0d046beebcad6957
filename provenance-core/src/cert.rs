//! X.509 v3 device certificates with Ed25519 keys (RFC 5280, RFC 8410).
//!
//! An issuer (a sensor manufacturer or a gateway fleet operator) holds a self-signed CA
//! certificate; it issues one certificate per device key. The subject names the device:
//! `CN=<device id>, OU=<sensor|gateway>, O=<issuer organisation>`. The subject key identifier
//! is the [`KeyId`] of the key (RFC 7093 method 1), the same bytes as the COSE `kid`.
//!
//! Parsing is strict: DER only (re-encoding must give back the input), Ed25519 in every
//! algorithm field, a non-weak key, and the extensions that say what the certificate is for.
//! `openssl verify -CAfile ca.pem device.pem` accepts the chains issued here (CI checks it).

use crate::keys::{self, KeyId};
use crate::reading::valid_device_id;
use alloc::{string::String, string::ToString, vec::Vec};
use core::time::Duration;
use der::asn1::{BitString, GeneralizedTime, OctetString, UtcTime};
use der::oid::db::rfc4519;
use der::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// The Ed25519 algorithm identifier OID (RFC 8410).
pub const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// Largest certificate accepted.
pub const MAX_CERT_LEN: usize = 4096;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An issuer CA (self-signed, `OU=issuer`).
    Issuer,
    /// A sensor (`OU=sensor`).
    Sensor,
    /// A gateway (`OU=gateway`).
    Gateway,
}

impl Role {
    /// The `OU` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Sensor => "sensor",
            Role::Gateway => "gateway",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "issuer" => Some(Role::Issuer),
            "sensor" => Some(Role::Sensor),
            "gateway" => Some(Role::Gateway),
            _ => None,
        }
    }
}

/// Why a certificate was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Over the size limit.
    #[error("certificate is {0} bytes, more than the 4096 allowed")]
    TooLong(usize),
    /// Not a DER X.509 certificate.
    #[error("not a DER-encoded X.509 certificate")]
    Malformed,
    /// Not version 3, or an algorithm other than Ed25519.
    #[error("certificate must be X.509 v3 with Ed25519 keys and signatures")]
    Algorithm,
    /// The subject key is not a valid, non-weak Ed25519 key.
    #[error("subject public key is not a valid Ed25519 key")]
    PublicKey,
    /// The subject lacks a valid CN (device id) or OU (role).
    #[error("subject must carry CN=<device id> and OU=<issuer|sensor|gateway>")]
    Subject,
    /// Extensions missing or inconsistent with the role.
    #[error("certificate extensions do not fit its role: {0}")]
    Extensions(&'static str),
    /// Outside its validity period.
    #[error("certificate is not valid at {at_ms} ms (valid {not_before_ms}..={not_after_ms})")]
    Expired {
        /// Time checked.
        at_ms: u64,
        /// Start of validity.
        not_before_ms: u64,
        /// End of validity.
        not_after_ms: u64,
    },
    /// Not issued by the given CA (name, key identifier or signature).
    #[error("certificate was not issued by this CA: {0}")]
    WrongIssuer(&'static str),
    /// Issuing failed (bad names or times).
    #[error("cannot issue certificate: {0}")]
    Issue(&'static str),
}

/// A parsed, structurally checked certificate.
#[derive(Debug, Clone)]
pub struct DeviceCert {
    der: Vec<u8>,
    cert: Certificate,
    /// The subject key.
    pub public_key: VerifyingKey,
    /// [`KeyId`] of the subject key (equal to the subject key identifier extension).
    pub key_id: KeyId,
    /// The device id or issuer name (subject CN).
    pub subject_cn: String,
    /// The role (subject OU).
    pub role: Role,
    /// Start of validity, Unix ms.
    pub not_before_ms: u64,
    /// End of validity, Unix ms.
    pub not_after_ms: u64,
}

fn rdn_value(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    let mut found = None;
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == oid {
                if found.is_some() {
                    return None; // one value per attribute
                }
                let s = der::asn1::Utf8StringRef::try_from(&atv.value)
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        der::asn1::PrintableStringRef::try_from(&atv.value)
                            .map(|s| s.as_str().to_string())
                    })
                    .ok()?;
                found = Some(s);
            }
        }
    }
    found
}

fn ed25519_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ED25519_OID,
        parameters: None,
    }
}

fn ms(t: Time) -> u64 {
    u64::try_from(t.to_unix_duration().as_millis()).unwrap_or(u64::MAX)
}

impl DeviceCert {
    /// Parses and checks a DER certificate.
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, CertError> {
        if der_bytes.len() > MAX_CERT_LEN {
            return Err(CertError::TooLong(der_bytes.len()));
        }
        let cert = Certificate::from_der(der_bytes).map_err(|_| CertError::Malformed)?;
        if cert.to_der().ok().as_deref() != Some(der_bytes) {
            return Err(CertError::Malformed);
        }
        let tbs = &cert.tbs_certificate;
        if tbs.version != Version::V3
            || cert.signature_algorithm != ed25519_alg()
            || tbs.signature != ed25519_alg()
            || tbs.subject_public_key_info.algorithm != ed25519_alg()
        {
            return Err(CertError::Algorithm);
        }
        let public_key = tbs
            .subject_public_key_info
            .subject_public_key
            .as_bytes()
            .and_then(keys::parse_public_key)
            .ok_or(CertError::PublicKey)?;
        let key_id = KeyId::of(&public_key);
        let subject_cn = rdn_value(&tbs.subject, rfc4519::CN).ok_or(CertError::Subject)?;
        let role = rdn_value(&tbs.subject, rfc4519::OU)
            .and_then(|ou| Role::parse(&ou))
            .ok_or(CertError::Subject)?;
        if role != Role::Issuer && !valid_device_id(&subject_cn) {
            return Err(CertError::Subject);
        }
        let parsed = Self {
            der: der_bytes.to_vec(),
            public_key,
            key_id,
            subject_cn,
            role,
            not_before_ms: ms(tbs.validity.not_before),
            not_after_ms: ms(tbs.validity.not_after),
            cert,
        };
        parsed.check_extensions()?;
        Ok(parsed)
    }

    /// Parses a PEM (`-----BEGIN CERTIFICATE-----`) certificate.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let (label, der_bytes) =
            der::pem::decode_vec(pem.as_bytes()).map_err(|_| CertError::Malformed)?;
        if label != "CERTIFICATE" {
            return Err(CertError::Malformed);
        }
        Self::from_der(&der_bytes)
    }

    /// The PEM encoding.
    pub fn to_pem(&self) -> String {
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &self.der)
            .unwrap_or_default()
    }

    /// The exact DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    fn extensions(&self) -> &[x509_cert::ext::Extension] {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or_default()
    }

    fn ext<T: for<'a> Decode<'a> + der::oid::AssociatedOid>(
        &self,
    ) -> Result<Option<(bool, T)>, CertError> {
        let mut found = None;
        for e in self.extensions().iter().filter(|e| e.extn_id == T::OID) {
            if found.is_some() {
                return Err(CertError::Extensions("duplicate extension"));
            }
            let v = T::from_der(e.extn_value.as_bytes())
                .map_err(|_| CertError::Extensions("undecodable extension"))?;
            found = Some((e.critical, v));
        }
        Ok(found)
    }

    fn check_extensions(&self) -> Result<(), CertError> {
        // RFC 5280 §4.2: a certificate with a critical extension the reader does not know
        // must be rejected.
        use der::oid::AssociatedOid;
        let known = [
            SubjectKeyIdentifier::OID,
            AuthorityKeyIdentifier::OID,
            BasicConstraints::OID,
            KeyUsage::OID,
        ];
        if self
            .extensions()
            .iter()
            .any(|e| e.critical && !known.contains(&e.extn_id))
        {
            return Err(CertError::Extensions(
                "an unknown extension is marked critical",
            ));
        }
        let ski = self
            .ext::<SubjectKeyIdentifier>()?
            .ok_or(CertError::Extensions("subject key identifier missing"))?;
        if ski.1 .0.as_bytes() != self.key_id.0 {
            return Err(CertError::Extensions(
                "subject key identifier is not the key's KeyId",
            ));
        }
        let bc = self
            .ext::<BasicConstraints>()?
            .map(|(_, bc)| bc.ca)
            .unwrap_or(false);
        let ku = self
            .ext::<KeyUsage>()?
            .ok_or(CertError::Extensions("key usage missing"))?
            .1;
        match self.role {
            Role::Issuer if !bc || !ku.key_cert_sign() => Err(CertError::Extensions(
                "an issuer needs CA:TRUE and keyCertSign",
            )),
            Role::Sensor | Role::Gateway if bc || !ku.digital_signature() || ku.key_cert_sign() => {
                Err(CertError::Extensions(
                    "a device needs CA:FALSE and digitalSignature only",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Checks that `at_ms` lies within the validity period.
    pub fn check_valid_at(&self, at_ms: u64) -> Result<(), CertError> {
        if at_ms < self.not_before_ms || at_ms > self.not_after_ms {
            return Err(CertError::Expired {
                at_ms,
                not_before_ms: self.not_before_ms,
                not_after_ms: self.not_after_ms,
            });
        }
        Ok(())
    }

    /// Checks that this certificate was issued by `ca`: issuer name, authority key identifier,
    /// the CA's role and a strict Ed25519 signature over the TBS bytes. Validity times are
    /// checked separately with [`DeviceCert::check_chain`].
    pub fn check_issued_by(&self, ca: &DeviceCert) -> Result<(), CertError> {
        if ca.role != Role::Issuer {
            return Err(CertError::WrongIssuer("the issuer certificate is not a CA"));
        }
        let tbs = &self.cert.tbs_certificate;
        if tbs.issuer != ca.cert.tbs_certificate.subject {
            return Err(CertError::WrongIssuer(
                "issuer name differs from the CA's subject",
            ));
        }
        if let Some((_, aki)) = self.ext::<AuthorityKeyIdentifier>()? {
            if aki.key_identifier.as_ref().map(OctetString::as_bytes) != Some(&ca.key_id.0[..]) {
                return Err(CertError::WrongIssuer(
                    "authority key identifier is not the CA's",
                ));
            }
        }
        let tbs_der = tbs.to_der().map_err(|_| CertError::Malformed)?;
        let sig = self
            .cert
            .signature
            .as_bytes()
            .and_then(keys::parse_signature)
            .ok_or(CertError::WrongIssuer("malformed signature"))?;
        if !keys::verify_signature(&ca.public_key, &tbs_der, &sig) {
            return Err(CertError::WrongIssuer(
                "signature does not verify with the CA key",
            ));
        }
        Ok(())
    }

    /// The whole chain check: issued by `ca`, and both certificates valid at `at_ms`.
    pub fn check_chain(&self, ca: &DeviceCert, at_ms: u64) -> Result<(), CertError> {
        ca.check_issued_by(ca)?;
        self.check_issued_by(ca)?;
        ca.check_valid_at(at_ms)?;
        self.check_valid_at(at_ms)
    }
}

/// What to put in a new certificate.
#[derive(Debug, Clone)]
pub struct CertParams<'a> {
    /// Subject CN: the device id, or the issuer's name.
    pub common_name: &'a str,
    /// Subject O: the issuer organisation.
    pub organization: &'a str,
    /// Serial number (positive, at most 20 bytes once encoded).
    pub serial: u64,
    /// Start of validity, Unix ms (truncated to seconds).
    pub not_before_ms: u64,
    /// End of validity, Unix ms (truncated to seconds).
    pub not_after_ms: u64,
}

fn x509_time(at_ms: u64) -> Result<Time, CertError> {
    let d = Duration::from_secs(at_ms / 1000);
    // RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
    if at_ms / 1000 < 2_524_608_000 {
        UtcTime::from_unix_duration(d).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(d).map(Time::GeneralTime)
    }
    .map_err(|_| CertError::Issue("time out of range"))
}

fn name(cn: &str, role: Role, org: &str) -> Result<Name, CertError> {
    let bad = |s: &str| {
        s.is_empty()
            || s.chars()
                .any(|c| matches!(c, ',' | '+' | '=' | '"' | '\\' | '<' | '>' | ';'))
    };
    if bad(cn) || bad(org) {
        return Err(CertError::Issue(
            "names must be non-empty and free of DN special characters",
        ));
    }
    alloc::format!("CN={cn},OU={},O={org}", role.as_str())
        .parse()
        .map_err(|_| CertError::Issue("bad subject name"))
}

fn extension<T: AsExtension>(value: &T, subject: &Name) -> Result<Extension, CertError> {
    value
        .to_extension(subject, &[])
        .map_err(|_| CertError::Issue("cannot encode extension"))
}

fn issue(
    params: &CertParams<'_>,
    role: Role,
    subject_key: &VerifyingKey,
    issuer: Name,
    issuer_key: &SigningKey,
) -> Result<Vec<u8>, CertError> {
    let subject = name(params.common_name, role, params.organization)?;
    let is_ca = role == Role::Issuer;
    let subject_kid = KeyId::of(subject_key);
    let issuer_kid = KeyId::of(&issuer_key.verifying_key());
    let bc = BasicConstraints {
        ca: is_ca,
        path_len_constraint: is_ca.then_some(0),
    };
    let ku = KeyUsage(if is_ca {
        KeyUsages::KeyCertSign | KeyUsages::CRLSign
    } else {
        KeyUsages::DigitalSignature.into()
    });
    let ski = SubjectKeyIdentifier(
        OctetString::new(subject_kid.0.to_vec()).map_err(|_| CertError::Issue("ski"))?,
    );
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(
            OctetString::new(issuer_kid.0.to_vec()).map_err(|_| CertError::Issue("aki"))?,
        ),
        ..Default::default()
    };
    let mut extensions = alloc::vec![
        extension(&bc, &subject)?,
        extension(&ku, &subject)?,
        extension(&ski, &subject)?,
    ];
    if !is_ca {
        extensions.push(extension(&aki, &subject)?);
    }
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&{
            // A leading zero byte keeps the INTEGER positive whatever the top bit.
            let mut b = alloc::vec![0u8];
            b.extend_from_slice(&params.serial.to_be_bytes());
            b
        })
        .map_err(|_| CertError::Issue("serial"))?,
        signature: ed25519_alg(),
        issuer,
        validity: Validity {
            not_before: x509_time(params.not_before_ms)?,
            not_after: x509_time(params.not_after_ms)?,
        },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned {
            algorithm: ed25519_alg(),
            subject_public_key: BitString::from_bytes(subject_key.as_bytes())
                .map_err(|_| CertError::Issue("key"))?,
        },
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(|_| CertError::Issue("tbs encoding"))?;
    let signature = issuer_key.sign(&tbs_der);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ed25519_alg(),
        signature: BitString::from_bytes(&signature.to_bytes())
            .map_err(|_| CertError::Issue("signature"))?,
    };
    cert.to_der().map_err(|_| CertError::Issue("encoding"))
}

/// Issues a self-signed issuer CA certificate (the factory's or fleet operator's root).
pub fn issue_ca(key: &SigningKey, params: &CertParams<'_>) -> Result<DeviceCert, CertError> {
    let subject = name(params.common_name, Role::Issuer, params.organization)?;
    let der_bytes = issue(params, Role::Issuer, &key.verifying_key(), subject, key)?;
    DeviceCert::from_der(&der_bytes)
}

/// Issues a sensor or gateway certificate for `device_key`, signed by the CA.
pub fn issue_device(
    ca_key: &SigningKey,
    ca: &DeviceCert,
    role: Role,
    device_key: &VerifyingKey,
    params: &CertParams<'_>,
) -> Result<DeviceCert, CertError> {
    if role == Role::Issuer {
        return Err(CertError::Issue("use issue_ca for issuer certificates"));
    }
    if KeyId::of(&ca_key.verifying_key()) != ca.key_id {
        return Err(CertError::Issue(
            "the signing key is not the CA certificate's key",
        ));
    }
    if !valid_device_id(params.common_name) {
        return Err(CertError::Issue(
            "device id must be 1..64 of [A-Za-z0-9._:-]",
        ));
    }
    let issuer = ca.cert.tbs_certificate.subject.clone();
    let der_bytes = issue(params, role, device_key, issuer, ca_key)?;
    DeviceCert::from_der(&der_bytes)
}
