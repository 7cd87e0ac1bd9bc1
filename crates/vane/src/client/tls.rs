//! TLS for `vane pub` and `vane sub`: the options of mosquitto_pub / mosquitto_sub
//! (`--cafile`, `--cert`, `--key`, `--insecure`, `--tls-version`), the rustls client
//! configuration they make, and the handshake.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme, SupportedProtocolVersion,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// TLS versions, as mosquitto spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersionArg {
    /// TLS 1.2 only.
    #[value(name = "tlsv1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "tlsv1.3")]
    Tls13,
}

/// TLS options common to `vane pub` and `vane sub`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Trust the CA certificates in this PEM file and connect with TLS.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM, leaf first) for brokers that require one; needs --key.
    #[arg(long, value_name = "FILE", requires_all = ["cafile", "key"])]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires_all = ["cafile", "cert"])]
    pub key: Option<PathBuf>,
    /// Do not check that the server certificate is for the host given with -h (the chain is
    /// still verified against --cafile).
    #[arg(long, requires = "cafile")]
    pub insecure: bool,
    /// Use only this TLS version (default: TLS 1.3 or 1.2).
    #[arg(long = "tls-version", value_enum, requires = "cafile")]
    pub tls_version: Option<TlsVersionArg>,
}

impl TlsArgs {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.cafile.is_some()
    }

    /// Whether a client certificate is configured.
    pub fn has_client_cert(&self) -> bool {
        self.cert.is_some()
    }
}

/// Every certificate in a PEM file; none is an error.
fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{shown}: invalid PEM"))?;
    if certs.is_empty() {
        return Err(anyhow!("{shown}: no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .with_context(|| format!("{shown}: invalid PEM"))?
        .ok_or_else(|| anyhow!("{shown}: no PRIVATE KEY in the file"))
}

/// The standard verifier, except that a certificate valid for another name is accepted. The
/// chain, validity dates and signatures are checked as usual: webpki checks the name last,
/// after the chain, so `NotValidForName` means everything else passed.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls client configuration the options describe. Every file is read here, so a bad
/// file is reported before any connection is made.
fn client_config(args: &TlsArgs, cafile: &Path) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(cafile)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: invalid CA certificate", cafile.display()))?;
    }
    let versions: &[&'static SupportedProtocolVersion] = match args.tls_version {
        None => rustls::DEFAULT_VERSIONS,
        Some(TlsVersionArg::Tls12) => &[&rustls::version::TLS12],
        Some(TlsVersionArg::Tls13) => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_protocol_versions(versions);
    let builder = if args.insecure {
        let verifier = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .with_context(|| format!("{}: unusable CA certificates", cafile.display()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    } else {
        builder.with_root_certificates(roots)
    };
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let private = read_key(key)?;
            builder
                .with_client_auth_cert(chain, private)
                .with_context(|| {
                    format!(
                        "{} and {} are not a usable certificate and key",
                        cert.display(),
                        key.display()
                    )
                })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Whether `err` comes from the broker's alert that a client certificate is required (TLS
/// 1.2 sends it during the handshake, TLS 1.3 after the client's side of it has ended).
pub fn certificate_required(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let rustls_error = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| cause.downcast_ref::<rustls::Error>());
        matches!(
            rustls_error,
            Some(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            ))
        )
    })
}

/// Prepared TLS: the configuration and the name the server certificate must carry.
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
    client_cert: bool,
}

impl Tls {
    /// Reads the files and builds the configuration; `None` without `--cafile`.
    pub fn new(args: &TlsArgs, host: &str) -> anyhow::Result<Option<Tls>> {
        let Some(cafile) = &args.cafile else {
            return Ok(None);
        };
        let config = client_config(args, cafile)?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| anyhow!("{host} is not a valid TLS server name: {e}"))?;
        Ok(Some(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
            client_cert: args.has_client_cert(),
        }))
    }

    /// Runs the handshake over a connected socket. A refusal for want of a client
    /// certificate says which options give one.
    pub async fn handshake(&self, tcp: TcpStream) -> anyhow::Result<TlsStream<TcpStream>> {
        match self.connector.connect(self.name.clone(), tcp).await {
            Ok(stream) => Ok(stream),
            Err(e) => {
                let err = anyhow::Error::new(e).context("TLS handshake failed");
                if certificate_required(&err) && !self.client_cert {
                    Err(err.context(
                        "the broker requires a client certificate: give one with --cert and --key",
                    ))
                } else {
                    Err(err)
                }
            }
        }
    }
}
