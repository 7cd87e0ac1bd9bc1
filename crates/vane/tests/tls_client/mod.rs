//! The rustls client configuration shared by the TLS tests (`tls.rs`, `tls_identity.rs`).

use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use test_support::certs::Issued;

/// A client configuration trusting `ca`, for the given TLS versions, with an optional client
/// certificate.
pub fn client_config(
    ca: &Issued,
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<&Issued>,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert.der().clone())
        .expect("CA is a valid root");
    let builder =
        ClientConfig::builder_with_protocol_versions(versions).with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.cert.der().clone()],
                PrivateKeyDer::Pkcs8(id.key.serialize_der().into()),
            )
            .expect("client certificate and key match"),
    }
}
