//! Test certificates made with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate, and a client certificate of another CA. Also used by
//! the `microseg` crate's tests (included by path).
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    /// (certificate PEM, key PEM) for `name`, valid for the `sans` (DNS names or IPs).
    pub fn issue(&self, name: &str, sans: &[&str], server: bool) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of a test PKI, written under one directory.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Client certificates of the cluster test's nodes, by node name.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
    /// Another CA and a client certificate it issued (to be refused).
    pub other_ca: PathBuf,
    pub other_cert: PathBuf,
    pub other_key: PathBuf,
}

impl Pki {
    /// A server certificate for `server_sans` (e.g. "127.0.0.1", "localhost").
    pub fn write(dir: &Path, server_sans: &[&str]) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = Ca::new("microseg test CA");
        let other = Ca::new("some other CA");
        let (sc, sk) = ca.issue("controller", server_sans, true);
        // A node's certificate names the node: it may act only as that node.
        let (cc, ck) = ca.issue("node-a", &["node-a"], false);
        let (oc, ok) = other.issue("node-a", &[], false);
        Pki {
            ca: w("ca.crt", &ca.pem),
            server_cert: w("server.crt", &sc),
            server_key: w("server.key", &sk),
            client_cert: w("client.crt", &cc),
            client_key: w("client.key", &ck),
            nodes: ["nodea", "nodeb"]
                .iter()
                .map(|n| {
                    let (c, k) = ca.issue(n, &[n], false);
                    (
                        n.to_string(),
                        w(&format!("{n}.crt"), &c),
                        w(&format!("{n}.key"), &k),
                    )
                })
                .collect(),
            other_ca: w("other-ca.crt", &other.pem),
            other_cert: w("other.crt", &oc),
            other_key: w("other.key", &ok),
        }
    }
}
