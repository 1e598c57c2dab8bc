//! The TLS side of `ftps`: trust roots, the optional client certificate, and telling a
//! certificate problem (the user must act) from a dropped handshake (worth a retry). It never
//! builds a verifier that accepts an unverified server.

use std::sync::Arc;

use super::FtpOptions;
use crate::error::{Error, Result};
use crate::tls::{pem_certificates as certificates, pem_private_key};

/// The TLS configuration for `opts`: the system's roots, or only `ca_file`'s; a client certificate
/// when `cert_file` is given (its key in `key_file`, or in the same file).
pub(super) fn config(opts: &FtpOptions) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match &opts.ca_file {
        Some(ca) => {
            for cert in certificates(ca, "ftp_ca_file")? {
                roots.add(cert).map_err(|e| {
                    Error::bad_input("ftp_ca_file", format!("{}: {e}", ca.display()))
                })?;
            }
        }
        None => {
            // Unreadable system certificates leave fewer roots: the server is then refused
            // with a message that names ftp_ca_file, never accepted.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::unsupported(format!("TLS for ftps: {e}")))?
        .with_root_certificates(roots);
    let config = match (&opts.cert_file, &opts.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (None, Some(_)) => {
            return Err(Error::bad_input(
                "ftp_certfile",
                "ftp_keyfile is given without the certificate it belongs to",
            ));
        }
        (Some(cert), key) => {
            let chain = certificates(cert, "ftp_certfile")?;
            let (field, key_path) = match key {
                Some(k) => ("ftp_keyfile", k.as_path()),
                None => ("ftp_certfile", cert.as_path()),
            };
            let key = pem_private_key(key_path, field)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::bad_input(field, format!("{}: {e}", key_path.display())))?
        }
    };
    Ok(Arc::new(config))
}

/// A connector for one control connection and its data connections. Servers (vsftpd's
/// `require_ssl_reuse`) demand that a data connection resume the TLS session of its own
/// control connection, so every control connection gets a session cache of its own: with a
/// shared one, a data connection could resume a sibling's session and be refused.
pub(super) fn connector(config: &Arc<rustls::ClientConfig>) -> tokio_rustls::TlsConnector {
    let mut own = (**config).clone();
    own.resumption = rustls::client::Resumption::in_memory_sessions(32);
    tokio_rustls::TlsConnector::from(Arc::new(own))
}

/// What the user must do about a TLS failure, if it is one they can fix (`None`: a dropped or
/// broken handshake, worth a retry).
pub(super) fn certificate_problem(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") {
        return Some(format!(
            "the server's TLS certificate did not verify ({text}): if it is signed by a private CA or self-signed, set ftp_ca_file to that CA's certificate (PEM); otherwise fix the server's certificate"
        ));
    }
    if lower.contains("certificaterequired") || lower.contains("certificate required") {
        return Some(format!(
            "the server wants a client certificate ({text}): set ftp_certfile and ftp_keyfile"
        ));
    }
    if lower.contains("invalid dns name") || lower.contains("invalid server name") {
        return Some(format!(
            "ftp_host cannot be checked against a TLS certificate ({text})"
        ));
    }
    None
}
