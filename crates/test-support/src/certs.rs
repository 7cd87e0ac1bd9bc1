//! Certificates for TLS tests, made at test time: a CA, server certificates for localhost and
//! 127.0.0.1 (or other names), client certificates.

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate with its key.
pub struct Issued {
    /// The certificate.
    pub cert: Certificate,
    /// Its private key.
    pub key: KeyPair,
}

impl Issued {
    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.pem")), self.cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), self.key.serialize_pem())
            .expect("write key");
    }
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA self-signs");
    Issued { cert, key }
}

/// A certificate signed by `ca` with common name `name` and `sans`, for a server (`server`)
/// or a client.
pub fn leaf(ca: &Issued, name: &str, sans: Vec<SanType>, server: bool) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("CA signs the certificate");
    Issued { cert, key }
}

/// The names a test server answers to: localhost and 127.0.0.1.
pub fn localhost_names() -> Vec<SanType> {
    vec![
        SanType::DnsName("localhost".try_into().expect("DNS name")),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ]
}

/// A server certificate for localhost and 127.0.0.1, signed by `ca`.
pub fn server_cert(ca: &Issued) -> Issued {
    leaf(ca, "localhost", localhost_names(), true)
}

/// A client certificate with common name `name`, signed by `ca`.
pub fn client_cert(ca: &Issued, name: &str) -> Issued {
    leaf(ca, name, Vec::new(), false)
}
