//! A session writer as an application runs it: connects to the store's Service DNS name (resolved
//! anew at every connect, which is how a client follows a failover here: the kit's DNS serves the
//! Service's ready endpoints), writes one session key after the other, and reconnects after any
//! error without retrying the failed write. It counts what the server acknowledged, the errors, and
//! the longest time between two acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// What the writer saw.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Indexes of the writes the server acknowledged with OK.
    pub acknowledged: Vec<u64>,
    /// Failed writes and failed connects.
    pub errors: u64,
    /// The longest time without an acknowledgement while writing.
    pub longest_gap: Duration,
}

/// The writer running on a thread of its own; [`ServiceWriter::stop`] returns its report.
pub struct ServiceWriter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<WriterReport>,
}

/// A client for `host:6379` as `user`.
pub fn client(host: &str, user: &str, password: &str) -> Result<Client, redis::RedisError> {
    let settings = RedisConnectionInfo::default()
        .set_username(user)
        .set_password(password);
    let info = ConnectionAddr::Tcp(host.to_string(), 6379)
        .into_connection_info()?
        .set_redis_settings(settings);
    Client::open(info)
}

fn connect(client: &Client) -> redis::RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    connection.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(connection)
}

impl ServiceWriter {
    /// Starts writing `<prefix><n>` keys (n = 0, 1, ...) through `client`, for at most `limit`.
    pub fn start(client: Client, prefix: &str, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let prefix = prefix.to_string();
        let thread = std::thread::spawn(move || {
            let mut report = WriterReport::default();
            let started = Instant::now();
            let mut last_ack = Instant::now();
            let mut connection = None;
            let mut n = 0u64;
            while !flag.load(Ordering::SeqCst) && started.elapsed() < limit {
                let con = match connection.as_mut() {
                    Some(con) => con,
                    None => match connect(&client) {
                        Ok(con) => connection.insert(con),
                        Err(_) => {
                            report.errors += 1;
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    },
                };
                let reply: redis::RedisResult<String> = redis::cmd("SET")
                    .arg(format!("{prefix}{n}"))
                    .arg(n)
                    .arg("EX")
                    .arg(3600)
                    .query(con);
                match reply {
                    Ok(ok) if ok == "OK" => {
                        report.longest_gap = report.longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                        report.acknowledged.push(n);
                    }
                    _ => {
                        // READONLY from a demoted primary, a reset connection, a timeout: this
                        // write is not acknowledged; reconnect through the Service name.
                        report.errors += 1;
                        connection = None;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                n += 1;
                // About 100 writes a second: enough to see a gap to the 10 ms, light on 2 cores.
                std::thread::sleep(Duration::from_millis(10));
            }
            report
        });
        ServiceWriter { stop, thread }
    }

    /// Stops the writer and returns what it saw.
    pub fn stop(self) -> Result<WriterReport, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| "the writer thread panicked".to_string())
    }
}

/// How many of `acknowledged` keys `<prefix><n>` the store no longer has (read through `client`).
pub fn lost_writes(client: &Client, prefix: &str, acknowledged: &[u64]) -> Result<usize, String> {
    let mut con = connect(client).map_err(|e| format!("reading back: {e}"))?;
    let mut lost = 0;
    for chunk in acknowledged.chunks(500) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("EXISTS").arg(format!("{prefix}{n}"));
        }
        let found: Vec<i64> = pipe
            .query(&mut con)
            .map_err(|e| format!("reading back: {e}"))?;
        lost += found.iter().filter(|f| **f == 0).count();
    }
    Ok(lost)
}
