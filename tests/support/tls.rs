//! A throw-away PKI made with the `openssl` CLI: a CA, a server certificate for 127.0.0.1 and
//! localhost signed by it, and an unrelated CA a client must not be able to use.

use std::path::Path;
use std::process::Command;

/// PEM files of one test PKI; the directory they were made in is gone when this is dropped.
pub struct TestPki {
    pub ca_crt: Vec<u8>,
    pub tls_crt: Vec<u8>,
    pub tls_key: Vec<u8>,
    /// A CA that signed nothing the server presents.
    pub wrong_ca_crt: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `openssl` (install the openssl package): {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn self_signed_ca(dir: &Path, stem: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{stem}.key"),
            "-out",
            &format!("{stem}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

impl TestPki {
    /// Makes a CA, a server certificate (SAN IP:127.0.0.1, DNS:localhost) and a second CA.
    pub fn generate() -> TestPki {
        TestPki::generate_for("IP:127.0.0.1,DNS:localhost")
    }

    /// Like [`TestPki::generate`], with the server certificate's subjectAltName set to `san`
    /// (openssl syntax, e.g. `IP:127.0.0.1,DNS:*.web-headless.shop.svc`).
    pub fn generate_for(san: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir for the test PKI");
        let d = dir.path();
        self_signed_ca(d, "ca", "sessionstore test CA");
        self_signed_ca(d, "wrong-ca", "unrelated test CA");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "tls.key",
                "-out",
                "tls.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            format!(
                "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .expect("write extensions file");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "tls.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "tls.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        let read =
            |name: &str| std::fs::read(d.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        TestPki {
            ca_crt: read("ca.crt"),
            tls_crt: read("tls.crt"),
            tls_key: read("tls.key"),
            wrong_ca_crt: read("wrong-ca.crt"),
        }
    }
}
