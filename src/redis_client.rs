//! One place that builds the operator's Redis and Sentinel clients: the ACL login (username and
//! password, no `CLIENT SETINFO`), TLS that trusts only the store's CA with names checked, and the
//! connect/response timeouts. Primary discovery, the handover, the health probe and the live ACL
//! changes of a rotation all dial through it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    RedisResult, TlsCertificates,
};

use crate::password::Password;

/// The login sent on connect (`AUTH username password`). `CLIENT SETINFO` is skipped: Sentinel 7.0
/// does not know it, and the operator's and the app's least-privilege ACL users may not run it.
pub fn login(username: &str, password: &Password) -> RedisConnectionInfo {
    RedisConnectionInfo::default()
        .set_username(username)
        .set_password(password.expose())
        .set_skip_set_lib_name()
}

/// TLS trusting only the store's CA (PEM), no client certificate.
pub fn store_ca(ca: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

/// A client for one Redis or Sentinel at `host:port` as `username`, over TLS with `tls` when given
/// (names checked).
pub fn client_for(
    host: String,
    port: u16,
    username: &str,
    password: &Password,
    tls: Option<&TlsCertificates>,
) -> RedisResult<redis::Client> {
    let settings = login(username, password);
    match tls {
        None => redis::Client::open(
            ConnectionAddr::Tcp(host, port)
                .into_connection_info()?
                .set_redis_settings(settings),
        ),
        Some(certs) => redis::Client::build_with_tls(
            tls_info(host, port)?.set_redis_settings(settings),
            certs.clone(),
        ),
    }
}

/// A client for an address that already carries its TLS settings (see [`tls_connection_addr`]).
pub fn client_at(
    addr: ConnectionAddr,
    username: &str,
    password: &Password,
) -> RedisResult<redis::Client> {
    let info: ConnectionInfo = addr.into_connection_info()?;
    redis::Client::open(info.set_redis_settings(login(username, password)))
}

/// A TLS address for `host:port` (verified against that name) that trusts only `ca` (PEM): what
/// the live ACL changes dial, on the Redis and on the Sentinel port alike.
pub fn tls_connection_addr(host: String, port: u16, ca: &[u8]) -> RedisResult<ConnectionAddr> {
    let client = redis::Client::build_with_tls(tls_info(host, port)?, store_ca(ca))?;
    Ok(client.get_connection_info().addr().clone())
}

fn tls_info(host: String, port: u16) -> RedisResult<ConnectionInfo> {
    ConnectionAddr::TcpTls {
        host,
        port,
        insecure: false,
        tls_params: None,
    }
    .into_connection_info()
}

/// Connects with both timeouts set: a dead or slow server costs at most `connect` to reach and
/// `response` per command.
pub async fn connect(
    client: &redis::Client,
    connect: Duration,
    response: Duration,
) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}
