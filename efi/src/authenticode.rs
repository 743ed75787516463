//! Authenticode signatures of PE images, as UEFI Secure Boot checks them against `db`:
//! the image digest (SHA-256 over the headers without CheckSum and the certificate-table
//! entry, the sections in file order, then what follows them), a PKCS#7 SignedData holding an
//! `SpcIndirectDataContent` with that digest, signed with RSA PKCS#1 v1.5 / SHA-256 (ring),
//! appended as a `WIN_CERTIFICATE`. What `sbsign` writes, but without its signing time, so the
//! same image and key give the same bytes. `sbverify` and OVMF check it in the tests.
//!
//! The DER is written here (a few fixed structures) rather than with the `cms` crate, whose
//! builder adds attributes of its own: every byte of a reproducible signature is chosen.

use der::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::pe::{put_u32, Layout};
use crate::EfiError;

const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
const MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
const SPC_INDIRECT_DATA: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04];
const SPC_PE_IMAGE_DATA: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0f];
const SPC_SP_OPUS_INFO: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0c];
/// `WIN_CERT_REVISION_2_0`, `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
const WIN_CERT_REVISION: u16 = 0x0200;
const WIN_CERT_TYPE: u16 = 0x0002;

/// A db signing key (PKCS#8 RSA) and its X.509 certificate (DER).
pub struct Signer {
    key: ring::signature::RsaKeyPair,
    certificate: Vec<u8>,
    issuer_and_serial: Vec<u8>,
}

impl Signer {
    pub fn new(key_pkcs8_der: &[u8], certificate_der: &[u8]) -> Result<Signer, EfiError> {
        let key = ring::signature::RsaKeyPair::from_pkcs8(key_pkcs8_der)
            .map_err(|e| EfiError::Key(e.to_string()))?;
        let cert = x509_cert::Certificate::from_der(certificate_der)
            .map_err(|e| EfiError::Certificate(e.to_string()))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        if spki != ring::signature::KeyPair::public_key(&key).as_ref() {
            return Err(EfiError::Certificate(
                "it does not belong to the signing key".into(),
            ));
        }
        let der = |r: der::Result<Vec<u8>>| r.map_err(|e| EfiError::Certificate(e.to_string()));
        let issuer = der(cert.tbs_certificate.issuer.to_der())?;
        let serial = der(cert.tbs_certificate.serial_number.to_der())?;
        Ok(Signer {
            key,
            certificate: certificate_der.to_vec(),
            issuer_and_serial: tlv(0x30, &[issuer, serial].concat()),
        })
    }

    /// The signer's certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The image with its Authenticode signature appended (padded to 8 bytes first, as the
    /// certificate table must start there; the padding is part of the digest).
    pub fn sign(&self, image: &[u8]) -> Result<Vec<u8>, EfiError> {
        let layout = Layout::parse(image)?;
        if layout.is_signed() {
            return Err(EfiError::AlreadySigned);
        }
        let mut out = image.to_vec();
        out.resize(out.len().div_ceil(8) * 8, 0);
        let digest = image_digest(&out)?;
        let pkcs7 = self.signed_data(&digest)?;
        let length = 8 + pkcs7.len();
        let padded = length.div_ceil(8) * 8;
        let offset = out.len();
        if offset + padded > u32::MAX as usize {
            return Err(EfiError::TooLarge("the signed image"));
        }
        out.extend_from_slice(&(length as u32).to_le_bytes());
        out.extend_from_slice(&WIN_CERT_REVISION.to_le_bytes());
        out.extend_from_slice(&WIN_CERT_TYPE.to_le_bytes());
        out.extend_from_slice(&pkcs7);
        out.resize(offset + padded, 0);
        put_u32(&mut out, layout.cert_directory, offset as u32);
        put_u32(&mut out, layout.cert_directory + 4, padded as u32);
        Ok(out)
    }

    fn signed_data(&self, digest: &[u8; 32]) -> Result<Vec<u8>, EfiError> {
        let sha256 = tlv(0x30, &[tlv(0x06, SHA256), vec![0x05, 0x00]].concat());
        // SpcPeImageData { flags: empty BIT STRING, file: [0] { [2] { [0] "<<<Obsolete>>>" } } }
        let obsolete: Vec<u8> = "<<<Obsolete>>>"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let link = tlv(0xa0, &tlv(0xa2, &tlv(0x80, &obsolete)));
        let image_data = tlv(0x30, &[vec![0x03, 0x01, 0x00], link].concat());
        let attribute = tlv(0x30, &[tlv(0x06, SPC_PE_IMAGE_DATA), image_data].concat());
        let digest_info = tlv(0x30, &[sha256.clone(), tlv(0x04, digest)].concat());
        let indirect_content = [attribute, digest_info].concat();
        // Authenticode digests the SpcIndirectDataContent's content octets, not its tag.
        let content_digest = Sha256::digest(&indirect_content);
        let mut attributes = [
            attr(CONTENT_TYPE, &tlv(0x06, SPC_INDIRECT_DATA)),
            attr(MESSAGE_DIGEST, &tlv(0x04, &content_digest)),
            attr(SPC_SP_OPUS_INFO, &[0x30, 0x00]),
        ];
        // DER orders a SET OF by its encodings (verifiers re-encode before checking).
        attributes.sort();
        let attributes = attributes.concat();
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                // PKCS#1 v1.5 draws nothing from it: the signature is deterministic.
                &ring::rand::SystemRandom::new(),
                &tlv(0x31, &attributes),
                &mut signature,
            )
            .map_err(|_| EfiError::Key("signing failed".into()))?;
        let signer_info = tlv(
            0x30,
            &[
                vec![0x02, 0x01, 0x01],
                self.issuer_and_serial.clone(),
                sha256.clone(),
                tlv(0xa0, &attributes),
                tlv(
                    0x30,
                    &[tlv(0x06, RSA_ENCRYPTION), vec![0x05, 0x00]].concat(),
                ),
                tlv(0x04, &signature),
            ]
            .concat(),
        );
        let content_info = tlv(
            0x30,
            &[
                tlv(0x06, SPC_INDIRECT_DATA),
                tlv(0xa0, &tlv(0x30, &indirect_content)),
            ]
            .concat(),
        );
        let signed = tlv(
            0x30,
            &[
                vec![0x02, 0x01, 0x01],
                tlv(0x31, &sha256),
                content_info,
                tlv(0xa0, &self.certificate),
                tlv(0x31, &signer_info),
            ]
            .concat(),
        );
        Ok(tlv(
            0x30,
            &[tlv(0x06, SIGNED_DATA), tlv(0xa0, &signed)].concat(),
        ))
    }
}

fn attr(oid: &[u8], value: &[u8]) -> Vec<u8> {
    tlv(0x30, &[tlv(0x06, oid), tlv(0x31, value)].concat())
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        v.push(0x80 | (bytes.len() - skip) as u8);
        v.extend_from_slice(&bytes[skip..]);
    }
    v.extend_from_slice(content);
    v
}

/// The Authenticode SHA-256 of an image (signed or not: the certificate table, which must be
/// last, is left out).
pub fn image_digest(d: &[u8]) -> Result<[u8; 32], EfiError> {
    let layout = Layout::parse(d)?;
    let (cert_offset, cert_size) = layout.cert_table;
    let end = match cert_offset {
        0 => d.len(),
        at if at as u64 + cert_size as u64 == d.len() as u64 => at as usize,
        _ => return Err(EfiError::NotPe("the certificate table is not at the end")),
    };
    let mut h = Sha256::new();
    h.update(&d[..layout.checksum]);
    h.update(&d[layout.checksum + 4..layout.cert_directory]);
    h.update(&d[layout.cert_directory + 8..layout.size_of_headers]);
    let mut sections: Vec<(usize, usize)> = layout
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| (s.raw_offset as usize, s.raw_size as usize))
        .collect();
    sections.sort();
    let mut hashed = layout.size_of_headers;
    for (offset, size) in sections {
        h.update(&d[offset..offset + size]);
        hashed += size;
    }
    // What follows the sections (edk2: from the sum of the bytes hashed so far).
    if end > hashed {
        h.update(&d[hashed..end]);
    }
    Ok(h.finalize().into())
}
