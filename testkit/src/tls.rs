//! A certificate authority made in the test, for servers and clients that speak TLS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::scratch::Scratch;

/// A test CA, and a certificate it signed for 127.0.0.1 and `localhost`, in PEM.
pub struct TestCa {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl TestCa {
    /// A new CA with one server certificate (also good as a client certificate).
    pub fn generate() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Herald test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("parameters");
        leaf.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.distinguished_name.push(DnType::CommonName, "herald");
        let key = KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &issuer).expect("signed certificate");
        Self {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A [`TestCa`]'s three PEM files in a scratch directory: the CA's certificate, and the
/// certificate and key it signed.
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _files: Scratch,
}

impl TlsFiles {
    pub fn generate(name: &str) -> Self {
        let files = Scratch::new(name);
        let pems = TestCa::generate();
        Self {
            ca_file: files.write("ca.pem", &pems.ca),
            cert_file: files.write("cert.pem", &pems.cert),
            key_file: files.write("key.pem", &pems.key),
            _files: files,
        }
    }

    /// A path as the text a configuration file or variable wants.
    pub fn text(path: &std::path::Path) -> String {
        path.to_string_lossy().into_owned()
    }
}
