//! Redis's command table and ACL categories, so `validate` refuses a `spec.disabledCommands`
//! entry that Redis itself would refuse.
//!
//! Redis loads the ACL file all or nothing: one rule naming an unknown command or category
//! ("Unknown command or category name in ACL") makes `redis-server` abort at start-up, so a
//! single typo in `disabledCommands` would crash-loop every pod. The lists below are what Redis
//! **7.0** reports (`COMMAND LIST` and `ACL CAT` of Debian's redis-server 7.0.15, no modules),
//! plus the commands Redis **7.2** added ([`ADDED_IN_7_2`]; the default image is `redis:7.2.5`).
//! An entry from [`ADDED_IN_7_2`] still breaks a 7.0 server: it is accepted because the supported
//! image is 7.2. Commands of newer servers (7.4+, Valkey extensions) and of modules are refused.
//! The test module checks the 7.0 part against the installed `redis-server`, and
//! `tests/redis_hardening.rs` proves that Redis accepts `-<entry>` for every one of them.

/// Commands and `command|subcommand` pairs of Redis 7.0, lower-case, sorted (byte order) for
/// binary search: exactly `COMMAND LIST` of a 7.0 server.
pub const REDIS_7_0_COMMANDS: &[&str] = &[
    "acl",
    "acl|cat",
    "acl|deluser",
    "acl|dryrun",
    "acl|genpass",
    "acl|getuser",
    "acl|help",
    "acl|list",
    "acl|load",
    "acl|log",
    "acl|save",
    "acl|setuser",
    "acl|users",
    "acl|whoami",
    "append",
    "asking",
    "auth",
    "bgrewriteaof",
    "bgsave",
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitop",
    "bitpos",
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "client",
    "client|caching",
    "client|getname",
    "client|getredir",
    "client|help",
    "client|id",
    "client|info",
    "client|kill",
    "client|list",
    "client|no-evict",
    "client|pause",
    "client|reply",
    "client|setname",
    "client|tracking",
    "client|trackinginfo",
    "client|unblock",
    "client|unpause",
    "cluster",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|count-failure-reports",
    "cluster|countkeysinslot",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|getkeysinslot",
    "cluster|help",
    "cluster|info",
    "cluster|keyslot",
    "cluster|links",
    "cluster|meet",
    "cluster|myid",
    "cluster|nodes",
    "cluster|replicas",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "cluster|shards",
    "cluster|slaves",
    "cluster|slots",
    "command",
    "command|count",
    "command|docs",
    "command|getkeys",
    "command|getkeysandflags",
    "command|help",
    "command|info",
    "command|list",
    "config",
    "config|get",
    "config|help",
    "config|resetstat",
    "config|rewrite",
    "config|set",
    "copy",
    "dbsize",
    "debug",
    "decr",
    "decrby",
    "del",
    "discard",
    "dump",
    "echo",
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "exec",
    "exists",
    "expire",
    "expireat",
    "expiretime",
    "failover",
    "fcall",
    "fcall_ro",
    "flushall",
    "flushdb",
    "function",
    "function|delete",
    "function|dump",
    "function|flush",
    "function|help",
    "function|kill",
    "function|list",
    "function|load",
    "function|restore",
    "function|stats",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadius_ro",
    "georadiusbymember",
    "georadiusbymember_ro",
    "geosearch",
    "geosearchstore",
    "get",
    "getbit",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "hdel",
    "hello",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hrandfield",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "hvals",
    "incr",
    "incrby",
    "incrbyfloat",
    "info",
    "keys",
    "lastsave",
    "latency",
    "latency|doctor",
    "latency|graph",
    "latency|help",
    "latency|histogram",
    "latency|history",
    "latency|latest",
    "latency|reset",
    "lcs",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lmpop",
    "lolwut",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "memory",
    "memory|doctor",
    "memory|help",
    "memory|malloc-stats",
    "memory|purge",
    "memory|stats",
    "memory|usage",
    "mget",
    "migrate",
    "module",
    "module|help",
    "module|list",
    "module|load",
    "module|loadex",
    "module|unload",
    "monitor",
    "move",
    "mset",
    "msetnx",
    "multi",
    "object",
    "object|encoding",
    "object|freq",
    "object|help",
    "object|idletime",
    "object|refcount",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "pfadd",
    "pfcount",
    "pfdebug",
    "pfmerge",
    "pfselftest",
    "ping",
    "psetex",
    "psubscribe",
    "psync",
    "pttl",
    "publish",
    "pubsub",
    "pubsub|channels",
    "pubsub|help",
    "pubsub|numpat",
    "pubsub|numsub",
    "pubsub|shardchannels",
    "pubsub|shardnumsub",
    "punsubscribe",
    "quit",
    "randomkey",
    "readonly",
    "readwrite",
    "rename",
    "renamenx",
    "replconf",
    "replicaof",
    "reset",
    "restore",
    "restore-asking",
    "role",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "save",
    "scan",
    "scard",
    "script",
    "script|debug",
    "script|exists",
    "script|flush",
    "script|help",
    "script|kill",
    "script|load",
    "sdiff",
    "sdiffstore",
    "select",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "shutdown",
    "sinter",
    "sintercard",
    "sinterstore",
    "sismember",
    "slaveof",
    "slowlog",
    "slowlog|get",
    "slowlog|help",
    "slowlog|len",
    "slowlog|reset",
    "smembers",
    "smismember",
    "smove",
    "sort",
    "sort_ro",
    "spop",
    "spublish",
    "srandmember",
    "srem",
    "sscan",
    "ssubscribe",
    "strlen",
    "subscribe",
    "substr",
    "sunion",
    "sunionstore",
    "sunsubscribe",
    "swapdb",
    "sync",
    "time",
    "touch",
    "ttl",
    "type",
    "unlink",
    "unsubscribe",
    "unwatch",
    "wait",
    "watch",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup",
    "xgroup|create",
    "xgroup|createconsumer",
    "xgroup|delconsumer",
    "xgroup|destroy",
    "xgroup|help",
    "xgroup|setid",
    "xinfo",
    "xinfo|consumers",
    "xinfo|groups",
    "xinfo|help",
    "xinfo|stream",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
    "xsetid",
    "xtrim",
    "zadd",
    "zcard",
    "zcount",
    "zdiff",
    "zdiffstore",
    "zincrby",
    "zinter",
    "zintercard",
    "zinterstore",
    "zlexcount",
    "zmpop",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
    "zunionstore",
];

/// Commands Redis 7.2.0 added to the 7.0 table (their `since` is 7.2.0 in Redis's
/// `src/commands/*.json` and on redis.io), sorted. A 7.0 server refuses them in an ACL rule.
pub const ADDED_IN_7_2: &[&str] = &[
    "client|no-touch",
    "client|setinfo",
    "cluster|myshardid",
    "waitaof",
];

/// ACL categories (without the `@`), sorted: `ACL CAT` of Redis 7.0 (7.2 added none) plus `all`,
/// which `ACL CAT` does not list but every ACL rule accepts (`-@all`).
pub const ACL_CATEGORIES: &[&str] = &[
    "admin",
    "all",
    "bitmap",
    "blocking",
    "connection",
    "dangerous",
    "fast",
    "geo",
    "hash",
    "hyperloglog",
    "keyspace",
    "list",
    "pubsub",
    "read",
    "scripting",
    "set",
    "slow",
    "sortedset",
    "stream",
    "string",
    "transaction",
    "write",
];

/// Whether Redis 7.2 knows `name` (lower-case, `command` or `command|subcommand`).
pub fn is_command(name: &str) -> bool {
    REDIS_7_0_COMMANDS.binary_search(&name).is_ok() || ADDED_IN_7_2.binary_search(&name).is_ok()
}

/// Whether `name` (lower-case, without the `@`) is an ACL category.
pub fn is_category(name: &str) -> bool {
    ACL_CATEGORIES.binary_search(&name).is_ok()
}

/// The known command nearest to a misspelt `name`, if one is close enough to be a likely typo.
pub fn closest_command(name: &str) -> Option<&'static str> {
    closest_in(name, REDIS_7_0_COMMANDS.iter().chain(ADDED_IN_7_2))
}

/// The ACL category nearest to a misspelt `name` (without the `@`), if one is close enough.
pub fn closest_category(name: &str) -> Option<&'static str> {
    closest_in(name, ACL_CATEGORIES.iter())
}

/// Nearest candidate by edit distance, at most a third of the name's length away (at least 1):
/// enough for a dropped, doubled or swapped letter, not so much that unrelated words match.
/// A few hundred short strings: cheap enough to run on every rejected spec.
pub(crate) fn closest_in<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a &'static str>,
) -> Option<&'static str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions), one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn assert_sorted_unique_lowercase(list: &[&str]) {
        for pair in list.windows(2) {
            assert!(pair[0] < pair[1], "not sorted/unique: {pair:?}");
        }
        for name in list {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }

    #[test]
    fn lists_are_sorted_for_binary_search() {
        assert_sorted_unique_lowercase(REDIS_7_0_COMMANDS);
        assert_sorted_unique_lowercase(ADDED_IN_7_2);
        assert_sorted_unique_lowercase(ACL_CATEGORIES);
        for added in ADDED_IN_7_2 {
            assert!(
                !REDIS_7_0_COMMANDS.contains(added),
                "{added} is already in 7.0"
            );
        }
    }

    #[test]
    fn lookups_and_suggestions() {
        assert!(is_command("sort") && is_command("client|kill") && is_command("waitaof"));
        assert!(!is_command("nosuchcommand") && !is_command("select|0") && !is_command("cli"));
        assert!(is_category("all") && is_category("pubsub") && !is_category("pubsubs"));
        assert_eq!(closest_command("flushal"), Some("flushall"));
        assert_eq!(closest_command("cleint|kill"), Some("client|kill"));
        assert_eq!(closest_command("nosuchcommand"), None);
        assert_eq!(closest_category("dangerus"), Some("dangerous"));
        assert_eq!(closest_category("zzzzzz"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    /// A plain throw-away `redis-server` (no config file, no persistence) on a free loopback port.
    struct PlainServer {
        child: Child,
        _dir: tempfile::TempDir,
        port: u16,
    }

    impl Drop for PlainServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start_plain_server() -> (PlainServer, redis::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `redis-server` ({e}): install Redis 7 (Debian: apt-get install redis-server)")
            });
        let mut server = PlainServer {
            child,
            _dir: dir,
            port,
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited with {status}");
            }
            let conn = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                    redis::cmd("PING").query::<String>(&mut conn)?;
                    Ok(conn)
                });
            match conn {
                Ok(conn) => return (server, conn),
                Err(e) if Instant::now() > deadline => {
                    panic!("redis-server did not answer in 15 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    /// The committed table is what the installed server reports: a 7.0 server must list exactly
    /// the 7.0 commands, a 7.2 one those plus [`ADDED_IN_7_2`]; and its categories. Any other
    /// version fails, so the table is reviewed when CI's Redis changes.
    #[test]
    fn table_matches_the_installed_redis_server() {
        let (_server, mut conn) = start_plain_server();
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or_else(|| panic!("no redis_version in INFO:\n{info}"))
            .trim()
            .to_string();
        let mut expected: BTreeSet<&str> = REDIS_7_0_COMMANDS.iter().copied().collect();
        if version.starts_with("7.2.") {
            expected.extend(ADDED_IN_7_2);
        } else {
            assert!(
                version.starts_with("7.0."),
                "the table is for Redis 7.0/7.2, the server is {version}"
            );
        }
        let listed: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut conn).unwrap();
        let listed: BTreeSet<String> = listed.iter().map(|c| c.to_ascii_lowercase()).collect();
        let expected: BTreeSet<String> = expected.into_iter().map(str::to_string).collect();
        assert_eq!(
            listed.difference(&expected).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "Redis {version} knows commands the table lacks"
        );
        assert_eq!(
            expected.difference(&listed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "the table has commands Redis {version} does not know"
        );

        let categories: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut conn).unwrap();
        let mut categories: BTreeSet<String> = categories.into_iter().collect();
        // `all` is accepted in rules but not listed by ACL CAT.
        assert!(
            categories.insert("all".to_string()),
            "ACL CAT now lists `all`"
        );
        let table: BTreeSet<String> = ACL_CATEGORIES.iter().map(|c| c.to_string()).collect();
        assert_eq!(categories, table, "ACL categories of Redis {version}");
    }
}
