//! Reads every pod of a store over the network: dials the pod IP (from the pod status, not Service
//! DNS, so each pod is seen even when the Service routes to one), logs in as the operator's ACL
//! user, optionally over TLS, and reads `INFO` and `PING`.
//!
//! Bounded on every side: a connect timeout, a command timeout, and ONE semaphore shared by every
//! store, so a thousand stores never open more than `max_connections` sockets at once. Each probe
//! opens one short-lived connection per pod and closes it: a pool would keep a socket (and a
//! `connected_clients` entry) open in every Redis between probes, 30 s apart, for no gain.
//!
//! TLS: the pod certificate is issued for DNS names, but we dial an IP. The chain is verified
//! against the store's own CA only (never the system roots), and the certificate must name this
//! pod or this store: `<pod>.<name>-headless.<ns>.svc[.<domain>]` (or a wildcard over the
//! headless Service), `<name>.<ns>.svc[.<domain>]` or `<name>`. Any one suffices, since
//! certificates from the user (`tls.secretName`) and from cert-manager list different names. The
//! pod IP is deliberately NOT accepted: pod IPs are recycled, so an IP in a certificate does not
//! identify this store. A certificate from another CA, or for another store, is refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::build::acl::OPERATOR_USER;
use crate::observe::info::{PodObservation, PodProblem, RedisInfo, StoreObservation};
use crate::password::Password;
use crate::redis_client;

/// The INFO sections the health report needs, in one call (Redis >= 7 takes several sections;
/// older servers get a plain `INFO`, whose default sections include all of these).
pub const INFO_SECTIONS: [&str; 7] = [
    "server",
    "memory",
    "clients",
    "stats",
    "replication",
    "keyspace",
    "persistence",
];

/// Limits of the probe; one value for the whole operator.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// TCP connect, and separately the TLS handshake.
    pub connect_timeout: Duration,
    /// Login, and then each command.
    pub command_timeout: Duration,
    /// Connections open at once across ALL stores.
    pub max_connections: usize,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(3),
            max_connections: 32,
        }
    }
}

/// One pod as the pod status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    pub name: String,
    /// `status.podIP`; `None` while the pod is not running yet.
    pub ip: Option<IpAddr>,
    /// The pod's Ready condition (a pod that is not Ready is still probed: it may be loading).
    pub ready: bool,
}

/// TLS parameters of a store with `spec.tls.enabled`.
#[derive(Clone)]
pub struct TlsTarget {
    /// `ca.crt` of the store's TLS Secret (PEM, one or more certificates).
    pub ca_pem: Vec<u8>,
    /// Cluster DNS domain (`--cluster-domain`), for the names the certificate may carry.
    pub cluster_domain: String,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("cluster_domain", &self.cluster_domain)
            .finish()
    }
}

/// Everything needed to probe one store.
#[derive(Clone, Debug)]
pub struct StoreTarget {
    pub namespace: String,
    pub name: String,
    /// The Redis port (plain, or `tls-port` with TLS).
    pub port: u16,
    pub pods: Vec<PodTarget>,
    /// `StoreCredentials::operator`; `Password`'s Debug is redacted.
    pub operator_password: Password,
    pub tls: Option<TlsTarget>,
}

/// Open sockets now and at most, counted from the TCP connect until the socket is closed.
#[derive(Debug, Default)]
struct ConnectionCount {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Decrements the open count when dropped, so every exit path (timeouts included) is counted.
struct OpenConnection<'a>(&'a ConnectionCount);

impl<'a> OpenConnection<'a> {
    fn new(count: &'a ConnectionCount) -> Self {
        let now = count.open.fetch_add(1, Ordering::SeqCst) + 1;
        count.peak.fetch_max(now, Ordering::SeqCst);
        OpenConnection(count)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The probe. Cheap to clone: clones share the concurrency bound and the counters.
#[derive(Clone, Debug)]
pub struct RedisProbe {
    settings: ProbeSettings,
    permits: Arc<Semaphore>,
    count: Arc<ConnectionCount>,
}

impl RedisProbe {
    pub fn new(settings: ProbeSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        RedisProbe {
            settings,
            permits,
            count: Arc::default(),
        }
    }

    pub fn settings(&self) -> &ProbeSettings {
        &self.settings
    }

    /// Sockets open right now.
    pub fn open_connections(&self) -> usize {
        self.count.open.load(Ordering::SeqCst)
    }

    /// Most sockets ever open at once since start (or the last `reset_peak`).
    pub fn peak_connections(&self) -> usize {
        self.count.peak.load(Ordering::SeqCst)
    }

    pub fn reset_peak(&self) {
        self.count
            .peak
            .store(self.open_connections(), Ordering::SeqCst);
    }

    /// Probes every pod of a store concurrently (each still waits for a global permit). Never
    /// fails: a pod that cannot be read is reported with the reason in its `PodObservation`.
    pub async fn probe_store(&self, store: &StoreTarget) -> StoreObservation {
        let tls = store
            .tls
            .as_ref()
            .map(|tls| client_config(tls, store).map(Arc::new));
        let pods = futures::future::join_all(
            store
                .pods
                .iter()
                .map(|pod| self.probe_pod(store, tls.as_ref(), pod)),
        )
        .await;
        StoreObservation { pods }
    }

    async fn probe_pod(
        &self,
        store: &StoreTarget,
        tls: Option<&Result<Arc<ClientConfig>, PodProblem>>,
        pod: &PodTarget,
    ) -> PodObservation {
        let observation = |result| PodObservation {
            name: pod.name.clone(),
            ready: pod.ready,
            result,
        };
        let Some(ip) = pod.ip else {
            return observation(Err(PodProblem::NotRunning));
        };
        let tls = match tls {
            None => None,
            Some(Ok(config)) => Some(config.clone()),
            Some(Err(problem)) => return observation(Err(problem.clone())),
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return observation(Err(PodProblem::Other("the probe is shutting down".into())));
        };
        let _open = OpenConnection::new(&self.count);
        let result = self.read_pod(store, pod, ip, tls).await;
        observation(result)
    }

    async fn read_pod(
        &self,
        store: &StoreTarget,
        pod: &PodTarget,
        ip: IpAddr,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<RedisInfo, PodProblem> {
        let address = SocketAddr::new(ip, store.port);
        let tcp = timeout(self.settings.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| PodProblem::ConnectTimeout)?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => PodProblem::ConnectionRefused,
                std::io::ErrorKind::TimedOut => PodProblem::ConnectTimeout,
                kind => PodProblem::ConnectFailed(kind.to_string()),
            })?;
        // Small request/response exchanges: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        match tls {
            None => self.talk(tcp, &store.operator_password).await,
            Some(config) => {
                let sni = pod_dns_name(store, pod)
                    .and_then(|n| ServerName::try_from(n).ok())
                    .unwrap_or(ServerName::IpAddress(ip.into()));
                let connector = tokio_rustls::TlsConnector::from(config);
                let stream = timeout(self.settings.connect_timeout, connector.connect(sni, tcp))
                    .await
                    .map_err(|_| {
                        PodProblem::TlsFailed("no handshake within the connect timeout".into())
                    })?
                    .map_err(|e| PodProblem::TlsFailed(e.to_string()))?;
                self.talk(stream, &store.operator_password).await
            }
        }
    }

    /// Logs in and reads INFO then PING on one connection, which is closed before returning.
    async fn talk<S>(&self, stream: S, password: &Password) -> Result<RedisInfo, PodProblem>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let command_timeout = self.settings.command_timeout;
        let login = redis_client::login(OPERATOR_USER, password);
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(command_timeout));
        let (mut connection, driver) = timeout(
            command_timeout,
            MultiplexedConnection::new_with_config(&login, stream, config),
        )
        .await
        .map_err(|_| PodProblem::CommandTimeout)?
        .map_err(|e| redis_problem(&e))?;

        let work = async move {
            let info = read_info(&mut connection).await?;
            if !info.loading {
                // A loading server answers INFO but refuses PING with LOADING; INFO said so already.
                let pong: String = redis::cmd("PING")
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| redis_problem(&e))?;
                if pong != "PONG" {
                    return Err(PodProblem::Other("unexpected PING reply".into()));
                }
            }
            Ok(info)
            // `connection` drops here, which ends `driver` and closes the socket.
        };
        let bounded = timeout(command_timeout * 3, async {
            let (result, ()) = tokio::join!(timeout(command_timeout * 2, work), driver);
            result
        });
        match bounded.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(PodProblem::CommandTimeout),
        }
    }
}

async fn read_info(connection: &mut MultiplexedConnection) -> Result<RedisInfo, PodProblem> {
    let sections: Result<String, RedisError> = redis::cmd("INFO")
        .arg(&INFO_SECTIONS[..])
        .query_async(connection)
        .await;
    let text = match sections {
        Ok(text) => text,
        // Redis < 7 takes one section only; its default INFO has them all.
        Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            redis::cmd("INFO")
                .query_async::<String>(connection)
                .await
                .map_err(|e| redis_problem(&e))?
        }
        Err(e) => return Err(redis_problem(&e)),
    };
    Ok(RedisInfo::parse(&text))
}

/// Names the kind of failure only: Redis error details can echo user names or arguments.
fn redis_problem(error: &RedisError) -> PodProblem {
    if error.kind() == ErrorKind::AuthenticationFailed {
        return PodProblem::AuthRefused;
    }
    if error.is_timeout() {
        return PodProblem::CommandTimeout;
    }
    match error.code() {
        Some("WRONGPASS") | Some("NOAUTH") => PodProblem::AuthRefused,
        Some("NOPERM") => {
            PodProblem::CommandRefused("NOPERM: the operator user's ACL lacks INFO or PING".into())
        }
        Some(code) => PodProblem::Other(code.to_string()),
        None if error.is_io_error() || error.is_connection_dropped() => {
            PodProblem::Other("the connection was closed by the server".into())
        }
        None => PodProblem::Other(format!("{:?}", error.kind())),
    }
}

/// `<pod>.<name>-headless.<ns>.svc.<domain>`: the name a replica or Sentinel uses for this pod.
fn pod_dns_name(store: &StoreTarget, pod: &PodTarget) -> Option<String> {
    let domain = store.tls.as_ref()?.cluster_domain.trim_end_matches('.');
    Some(format!(
        "{}.{}-headless.{}.svc.{domain}",
        pod.name, store.name, store.namespace
    ))
}

/// Every name this store's certificate may legitimately carry for one pod (see the module doc).
fn acceptable_names(
    store: &StoreTarget,
    tls: &TlsTarget,
    pod: Option<&PodTarget>,
) -> Vec<ServerName<'static>> {
    let domain = tls.cluster_domain.trim_end_matches('.');
    let (name, ns) = (&store.name, &store.namespace);
    let mut names = Vec::new();
    if let Some(pod) = pod {
        let base = format!("{}.{name}-headless.{ns}", pod.name);
        names.extend([format!("{base}.svc.{domain}"), format!("{base}.svc"), base]);
    }
    names.extend([
        format!("{name}.{ns}.svc.{domain}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}"),
        name.clone(),
    ]);
    names
        .into_iter()
        .filter_map(|n| ServerName::try_from(n).ok())
        .collect()
}

/// A rustls client trusting only the store's CA and the store's names.
fn client_config(tls: &TlsTarget, store: &StoreTarget) -> Result<ClientConfig, PodProblem> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.ca_pem) {
        let cert =
            cert.map_err(|_| PodProblem::TlsFailed("the store's ca.crt is not valid PEM".into()))?;
        roots.add(cert).map_err(|e| {
            PodProblem::TlsFailed(format!("the store's ca.crt is not a usable CA ({e})"))
        })?;
    }
    if roots.is_empty() {
        return Err(PodProblem::TlsFailed(
            "the store's ca.crt holds no certificate".into(),
        ));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| PodProblem::TlsFailed(format!("cannot build a verifier from ca.crt ({e})")))?;
    let verifier = Arc::new(StoreNameVerifier {
        inner,
        store_names: acceptable_names(store, tls, None),
        pods: store
            .pods
            .iter()
            .map(|p| {
                (
                    pod_dns_name(store, p),
                    acceptable_names(store, tls, Some(p)),
                )
            })
            .collect(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PodProblem::TlsFailed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// Verifies the chain with webpki against the store's CA, and accepts the certificate when it is
/// valid for any of the names this pod (identified by the SNI we sent) or this store may carry.
#[derive(Debug)]
struct StoreNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    store_names: Vec<ServerName<'static>>,
    /// (SNI sent for the pod, names acceptable for that pod).
    pods: Vec<(Option<String>, Vec<ServerName<'static>>)>,
}

impl ServerCertVerifier for StoreNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let sni = server_name.to_str();
        let names = self
            .pods
            .iter()
            .find(|(pod_sni, _)| pod_sni.as_deref() == Some(sni.as_ref()))
            .map(|(_, names)| names)
            .unwrap_or(&self.store_names);
        let mut last_error = rustls::Error::General("no acceptable name for this store".into());
        for name in names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(verified) => return Ok(verified),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StoreTarget {
        StoreTarget {
            namespace: "shop".into(),
            name: "checkout".into(),
            port: 6379,
            pods: vec![PodTarget {
                name: "checkout-0".into(),
                ip: Some("10.0.0.7".parse().expect("ip")),
                ready: true,
            }],
            operator_password: Password::from_secret_value("not-a-real-password".into()),
            tls: Some(TlsTarget {
                ca_pem: Vec::new(),
                cluster_domain: "cluster.local.".into(),
            }),
        }
    }

    #[test]
    fn acceptable_names_cover_the_pod_and_the_store_but_not_the_ip() {
        let s = store();
        let tls = s.tls.clone().expect("tls");
        let names: Vec<String> = acceptable_names(&s, &tls, s.pods.first())
            .iter()
            .map(|n| n.to_str().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                "checkout-0.checkout-headless.shop.svc.cluster.local",
                "checkout-0.checkout-headless.shop.svc",
                "checkout-0.checkout-headless.shop",
                "checkout.shop.svc.cluster.local",
                "checkout.shop.svc",
                "checkout.shop",
                "checkout",
            ]
        );
    }

    #[test]
    fn a_missing_or_broken_ca_is_a_tls_problem_not_a_panic() {
        let s = store();
        let tls = s.tls.clone().expect("tls");
        assert!(matches!(
            client_config(&tls, &s),
            Err(PodProblem::TlsFailed(_))
        ));
        let broken = TlsTarget {
            ca_pem: b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
                .to_vec(),
            ..tls
        };
        assert!(matches!(
            client_config(&broken, &s),
            Err(PodProblem::TlsFailed(_))
        ));
    }

    #[test]
    fn debug_never_prints_the_password_or_the_ca() {
        let mut s = store();
        s.tls = Some(TlsTarget {
            ca_pem: b"PEMBYTES".to_vec(),
            cluster_domain: "cluster.local".into(),
        });
        let printed = format!("{s:?}");
        assert!(!printed.contains("not-a-real-password"));
        assert!(!printed.contains("PEMBYTES"));
        assert!(printed.contains("<8 bytes>"));
    }

    #[tokio::test]
    async fn pods_without_ip_are_not_dialled() {
        let probe = RedisProbe::new(ProbeSettings::default());
        let mut s = store();
        s.tls = None;
        s.pods[0].ip = None;
        let observation = probe.probe_store(&s).await;
        assert_eq!(observation.pods[0].result, Err(PodProblem::NotRunning));
        assert_eq!(probe.peak_connections(), 0);
    }
}
