//! A CA and a certificate for `frps.test` made for one test, for servers that present their own
//! certificate (frps with `transport.tls.certFile`, nginx terminating wss).

use super::*;

/// The name in the certificate.
pub const CERT_NAME: &str = "frps.test";

pub struct Pki {
    pub dir: tempdir::TempDir,
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub leaf_sha256: String,
}

impl Pki {
    pub fn new() -> Pki {
        use sha2::{Digest, Sha256};
        let dir = tempdir::TempDir::new();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "burrow test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![CERT_NAME.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let ca_pem = write_file(dir.path(), "ca.pem", &ca.pem());
        let cert = write_file(dir.path(), "frps.crt", &leaf.pem());
        let key = write_file(dir.path(), "frps.key", &leaf_key.serialize_pem());
        let leaf_sha256 = Sha256::digest(leaf.der()).iter().map(|x| format!("{x:02x}")).collect();
        Pki { dir, ca_pem, cert, key, leaf_sha256 }
    }

    /// frps' configuration lines that make it present this certificate.
    pub fn frps_extra(&self) -> String {
        format!(
            "transport.tls.certFile = \"{}\"\ntransport.tls.keyFile = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}
