//! Reading TLS material from PEM files, shared by every TLS user of the crate (ftps, the
//! freezer-api client, the API server): certificates (trust roots, chains), private keys,
//! and the permission check a key file must pass. Errors name the file and the option that
//! gave it.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The certificates of a PEM file (at least one); `field` names the option in errors.
pub(crate) fn pem_certificates(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bad =
        |e: &dyn std::fmt::Display| Error::bad_input(field, format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1); `field` names the option in errors.
pub(crate) fn pem_private_key(path: &Path, field: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::bad_input(field, format!("{}: no private key: {e}", path.display())))
}

/// Refuses a key file that group or others may read, as the API refuses a readable users file
/// holding a plaintext password and a readable password file.
#[cfg(feature = "service")]
pub(crate) fn check_private_file(path: &Path, field: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("{field} {}", path.display()), e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::bad_input(
            field,
            format!(
                "{}: group or others may read this private key: run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(feature = "service")]
/// The TLS options of an HTTP client (reqwest), by the option names that gave them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientTls<'a> {
    /// Trust roots added to the system's.
    pub ca_file: Option<&'a Path>,
    /// Skip certificate verification.
    pub insecure: bool,
    /// A client certificate chain ...
    pub cert: Option<&'a Path>,
    /// ... and its key (default: in the certificate's file).
    pub key: Option<&'a Path>,
    /// The names of the CA, certificate and key options, for errors.
    pub fields: [&'a str; 3],
    /// What the client talks to, for the warning of `insecure`.
    pub what: &'a str,
}

#[cfg(feature = "service")]
/// Applies `tls` to an HTTP client's builder: the CA file's roots merged with the system's, a
/// client certificate, or no verification at all (with a warning).
pub(crate) fn reqwest_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &ClientTls<'_>,
) -> Result<reqwest::ClientBuilder> {
    let [ca_field, cert_field, key_field] = tls.fields;
    if let Some(ca) = tls.ca_file {
        let mut roots = Vec::new();
        for der in pem_certificates(ca, ca_field)? {
            roots.push(
                reqwest::Certificate::from_der(&der)
                    .map_err(|e| Error::bad_input(ca_field, format!("{}: {e}", ca.display())))?,
            );
        }
        builder = builder.tls_certs_merge(roots);
    }
    match (tls.cert, tls.key) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(Error::bad_input(
                cert_field,
                format!("{key_field} is given without the certificate it belongs to"),
            ));
        }
        (Some(cert), key) => {
            let (field, key_path) = match key {
                Some(k) => (key_field, k),
                None => (cert_field, cert),
            };
            pem_certificates(cert, cert_field)?;
            pem_private_key(key_path, field)?;
            check_private_file(key_path, field)?;
            let mut pem = std::fs::read(key_path)
                .map_err(|e| Error::io(format!("{field} {}", key_path.display()), e))?;
            if key.is_some() {
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(cert)
                        .map_err(|e| Error::io(format!("{cert_field} {}", cert.display()), e))?,
                );
            }
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::bad_input(field, format!("{}: {e}", key_path.display())))?;
            builder = builder.identity(identity);
        }
    }
    if tls.insecure {
        tracing::warn!(
            "TLS certificates of {} are not verified (insecure): anyone on the network path can read the credentials",
            tls.what
        );
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

#[cfg(feature = "service")]
/// What the user must do about a TLS failure described by `text` (an error and its causes),
/// if it is a certificate that did not verify; `ca_option` names the option that adds a CA.
pub(crate) fn certificate_hint(text: &str, ca_option: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") || lower.contains("certificate verify failed") {
        return Some(format!(
            "the server's TLS certificate did not verify: if a private CA signed it, give that CA's certificate (PEM) with {ca_option}; otherwise fix the server's certificate"
        ));
    }
    None
}
