//! Certificates for testing `rediss://` against a real `redis-server` with TLS: a private
//! CA, a server certificate for `127.0.0.1` and `localhost`, and a client certificate, made
//! with the `openssl` command (Debian: `apt-get install openssl`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), stevedore_testcontainers::KitError> {
//! use stevedore_testcontainers::{RedisServer, TestCerts};
//!
//! let certs = TestCerts::generate()?;
//! let tls_port = stevedore_testcontainers::free_port()?;
//! let server = certs.tls_args(RedisServer::builder(), tls_port, false).start().await?;
//! let client = stevedore::Client::builder(&format!("rediss://127.0.0.1:{tls_port}"))
//!     .tls_ca_file(certs.ca())
//!     .connect()
//!     .await?;
//! # drop((server, client));
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::KitError;
use crate::process::RedisServerBuilder;

/// A CA, a server certificate and a client certificate in a temp dir (removed on drop).
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes the CA and both certificates (ECDSA P-256, valid for a day).
    pub fn generate() -> Result<TestCerts, KitError> {
        let dir = tempfile::Builder::new()
            .prefix("stevedore-certs-")
            .tempdir()?;
        let d = dir.path();
        let openssl = |args: &[&str]| -> Result<(), KitError> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("could not run openssl (apt-get install openssl): {e}"),
                    )
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "openssl {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
                .into())
            }
        };
        let key = |name: &str| -> Result<(), KitError> {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                name,
            ])
        };
        key("ca.key")?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-days",
            "1",
            "-subj",
            "/CN=stevedore test CA",
            "-out",
            "ca.crt",
        ])?;
        for (name, subject, ext) in [
            (
                "server",
                "/CN=localhost",
                "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=stevedore test client",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            key(&format!("{name}.key"))?;
            openssl(&[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                subject,
                "-out",
                &format!("{name}.csr"),
            ])?;
            std::fs::write(d.join(format!("{name}.ext")), ext)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ])?;
        }
        Ok(TestCerts { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate (PEM): trust it with `ClientBuilder::tls_ca_file`.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// The server's certificate (PEM), for `127.0.0.1`, `::1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.crt")
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }

    /// The client certificate (PEM), signed by the CA.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }

    /// The client's private key (PEM, PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds what `redis-server` needs to serve TLS on `tls_port` with these certificates
    /// (besides its plain port, which the builder uses to see that it is up), asking for a
    /// client certificate when `client_auth`.
    pub fn tls_args(
        &self,
        builder: RedisServerBuilder,
        tls_port: u16,
        client_auth: bool,
    ) -> RedisServerBuilder {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        builder
            .arg("--tls-port")
            .arg(tls_port.to_string())
            .arg("--tls-cert-file")
            .arg(path(self.server_cert()))
            .arg("--tls-key-file")
            .arg(path(self.server_key()))
            .arg("--tls-ca-cert-file")
            .arg(path(self.ca()))
            .arg("--tls-auth-clients")
            .arg(if client_auth { "yes" } else { "no" })
    }
}
