//! The command tables and ACL categories of each engine, so `validate` refuses a
//! `spec.disabledCommands` entry that the store's server itself would refuse.
//!
//! Redis and Valkey load the ACL file all or nothing: one rule naming an unknown command or
//! category ("Unknown command or category name in ACL") makes the server abort at start-up, so a
//! single typo in `disabledCommands` would crash-loop every pod. Each engine has its table
//! ([`CommandTable::of`]):
//! - **Redis**: what Redis **7.0** reports (`COMMAND LIST` and `ACL CAT` of Debian's
//!   redis-server 7.0.15, no modules), plus the commands Redis **7.2** added ([`ADDED_IN_7_2`]; the
//!   default Redis image is `redis:7.2.5`). An entry from [`ADDED_IN_7_2`] still breaks a 7.0
//!   server: it is accepted because the supported image is 7.2. Commands of newer servers (7.4+)
//!   and Valkey's own are refused for a Redis store.
//! - **Valkey**: exactly what Valkey **8.0.1** reports ([`VALKEY_8_0_COMMANDS`], from
//!   `valkey-server` 8.0.1 with no modules; the default Valkey image is `valkey/valkey:8.0.1`):
//!   Redis 7.2's commands plus Valkey's `client|capa`, `cluster|slot-stats` and `script|show`.
//!   Its ACL categories are Redis's ([`ACL_CATEGORIES`]).
//!
//! Module commands are refused for both. The test module checks the tables against the installed
//! `redis-server` and the Valkey 8.0.1 binaries (`VALKEY_BIN_DIR`, default `../shared/bin`), and
//! `tests/redis_hardening.rs` / `tests/valkey_hardening.rs` prove that each server accepts
//! `-<entry>` for every entry of its table.

use crate::crd::Engine;

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

/// Commands and `command|subcommand` pairs of Valkey 8.0, lower-case, sorted (byte order) for
/// binary search: exactly `COMMAND LIST` of `valkey-server` 8.0.1 (no modules).
pub const VALKEY_8_0_COMMANDS: &[&str] = &[
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
    "client|capa",
    "client|getname",
    "client|getredir",
    "client|help",
    "client|id",
    "client|info",
    "client|kill",
    "client|list",
    "client|no-evict",
    "client|no-touch",
    "client|pause",
    "client|reply",
    "client|setinfo",
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
    "cluster|myshardid",
    "cluster|nodes",
    "cluster|replicas",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "cluster|shards",
    "cluster|slaves",
    "cluster|slot-stats",
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
    "script|show",
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
    "waitaof",
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

/// One engine's command table: what `disabledCommands` is checked against.
#[derive(Debug)]
pub struct CommandTable {
    /// The engine's name as messages write it (`Redis`, `Valkey`).
    pub engine: &'static str,
    /// The version the table is for (`7.2`, `8.0`).
    pub version: &'static str,
    /// Sorted lists whose union is every command and `command|subcommand` the server knows.
    commands: &'static [&'static [&'static str]],
    /// ACL categories (without the `@`), sorted, `all` included.
    pub categories: &'static [&'static str],
}

/// Redis 7.2: the 7.0 table and the 7.2 additions.
pub static REDIS: CommandTable = CommandTable {
    engine: "Redis",
    version: "7.2",
    commands: &[REDIS_7_0_COMMANDS, ADDED_IN_7_2],
    categories: ACL_CATEGORIES,
};

/// Valkey 8.0 (`ACL CAT` of Valkey 8.0.1 is Redis's).
pub static VALKEY: CommandTable = CommandTable {
    engine: "Valkey",
    version: "8.0",
    commands: &[VALKEY_8_0_COMMANDS],
    categories: ACL_CATEGORIES,
};

impl CommandTable {
    /// The table of the server a store of this engine runs.
    pub fn of(engine: Engine) -> &'static CommandTable {
        match engine {
            Engine::Redis => &REDIS,
            Engine::Valkey => &VALKEY,
        }
    }

    /// Every command and `command|subcommand` of the table (each list in order).
    pub fn commands(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.commands.iter().flat_map(|list| list.iter().copied())
    }

    /// Whether the server knows `name` (lower-case, `command` or `command|subcommand`).
    pub fn is_command(&self, name: &str) -> bool {
        self.commands
            .iter()
            .any(|list| list.binary_search(&name).is_ok())
    }

    /// Whether `name` (lower-case, without the `@`) is an ACL category of the server.
    pub fn is_category(&self, name: &str) -> bool {
        self.categories.binary_search(&name).is_ok()
    }

    /// The known command nearest to a misspelt `name`, if one is close enough to be a likely typo.
    pub fn closest_command(&self, name: &str) -> Option<&'static str> {
        closest_in(name, self.commands.iter().flat_map(|list| list.iter()))
    }

    /// The ACL category nearest to a misspelt `name` (without the `@`), if one is close enough.
    pub fn closest_category(&self, name: &str) -> Option<&'static str> {
        closest_in(name, self.categories.iter())
    }
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
    use crate::test_servers::{PlainServer, valkey_server};
    use std::collections::BTreeSet;
    use std::path::Path;

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
        assert_sorted_unique_lowercase(VALKEY_8_0_COMMANDS);
        for added in ADDED_IN_7_2 {
            assert!(
                !REDIS_7_0_COMMANDS.contains(added),
                "{added} is already in 7.0"
            );
        }
    }

    /// Valkey 8.0 is Redis 7.2 and three commands of its own; nothing of Redis 7.2 is missing.
    #[test]
    fn valkey_8_0_is_redis_7_2_and_three_commands() {
        let redis: BTreeSet<&str> = REDIS.commands().collect();
        let valkey: BTreeSet<&str> = VALKEY.commands().collect();
        assert_eq!(redis.difference(&valkey).count(), 0);
        assert_eq!(
            valkey.difference(&redis).copied().collect::<Vec<_>>(),
            ["client|capa", "cluster|slot-stats", "script|show"]
        );
        assert!(std::ptr::eq(CommandTable::of(Engine::Redis), &REDIS));
        assert!(std::ptr::eq(CommandTable::of(Engine::Valkey), &VALKEY));
    }

    #[test]
    fn lookups_and_suggestions() {
        for table in [&REDIS, &VALKEY] {
            assert!(table.is_command("sort") && table.is_command("client|kill"));
            assert!(table.is_command("waitaof"), "{}", table.engine);
            assert!(!table.is_command("nosuchcommand") && !table.is_command("select|0"));
            assert!(!table.is_command("cli"));
            assert!(table.is_category("all") && table.is_category("pubsub"));
            assert!(!table.is_category("pubsubs"));
            assert_eq!(table.closest_command("flushal"), Some("flushall"));
            assert_eq!(table.closest_command("cleint|kill"), Some("client|kill"));
            assert_eq!(table.closest_command("nosuchcommand"), None);
            assert_eq!(table.closest_category("dangerus"), Some("dangerous"));
            assert_eq!(table.closest_category("zzzzzz"), None);
        }
        assert!(!REDIS.is_command("script|show") && VALKEY.is_command("script|show"));
        assert!(!REDIS.is_command("client|capa") && VALKEY.is_command("client|capa"));
        assert_ne!(REDIS.closest_command("script|shw"), Some("script|show"));
        assert_eq!(VALKEY.closest_command("script|shw"), Some("script|show"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    /// `COMMAND LIST` and `ACL CAT` (plus `all`, which every rule accepts but ACL CAT does not
    /// list) of a running server, lower-case.
    fn listed(server: &mut PlainServer) -> (BTreeSet<String>, BTreeSet<String>) {
        let commands: Vec<String> = redis::cmd("COMMAND")
            .arg("LIST")
            .query(&mut server.conn)
            .unwrap();
        let categories: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .query(&mut server.conn)
            .unwrap();
        let mut categories: BTreeSet<String> = categories.into_iter().collect();
        assert!(
            categories.insert("all".to_string()),
            "ACL CAT now lists `all`"
        );
        (
            commands.iter().map(|c| c.to_ascii_lowercase()).collect(),
            categories,
        )
    }

    fn assert_same(server: &str, listed: &BTreeSet<String>, table: BTreeSet<&str>) {
        let table: BTreeSet<String> = table.into_iter().map(str::to_string).collect();
        assert_eq!(
            listed.difference(&table).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{server} knows commands the table lacks"
        );
        assert_eq!(
            table.difference(listed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "the table has commands {server} does not know"
        );
    }

    /// The committed table is what the installed server reports: a 7.0 server must list exactly
    /// the 7.0 commands, a 7.2 one those plus [`ADDED_IN_7_2`]; and its categories. Any other
    /// version fails, so the table is reviewed when CI's Redis changes.
    #[test]
    fn table_matches_the_installed_redis_server() {
        let mut server = PlainServer::start(Path::new("redis-server"));
        let (name, version) = server.name_and_version();
        assert_eq!(name, "redis", "`redis-server` is {name} {version}");
        let mut expected: BTreeSet<&str> = REDIS_7_0_COMMANDS.iter().copied().collect();
        if version.starts_with("7.2.") {
            expected.extend(ADDED_IN_7_2);
        } else {
            assert!(
                version.starts_with("7.0."),
                "the table is for Redis 7.0/7.2, the server is {version}"
            );
        }
        let (commands, categories) = listed(&mut server);
        assert_same(&format!("Redis {version}"), &commands, expected);
        let table: BTreeSet<String> = ACL_CATEGORIES.iter().map(|c| c.to_string()).collect();
        assert_eq!(categories, table, "ACL categories of Redis {version}");
    }

    /// The Valkey table is exactly what Valkey 8.0.1 reports (`COMMAND LIST`, `ACL CAT`).
    /// Another version fails, so the table is regenerated and reviewed when the binaries change.
    #[test]
    fn valkey_table_matches_valkey_8_0_1() {
        let Some(binary) = valkey_server() else {
            return;
        };
        let mut server = PlainServer::start(&binary);
        let (name, version) = server.name_and_version();
        assert_eq!(name, "valkey", "{} is {name} {version}", binary.display());
        assert_eq!(
            version, "8.0.1",
            "the table is for Valkey 8.0.1: regenerate it from COMMAND LIST"
        );
        let (commands, categories) = listed(&mut server);
        assert_same(
            &format!("Valkey {version}"),
            &commands,
            VALKEY.commands().collect(),
        );
        let table: BTreeSet<String> = VALKEY.categories.iter().map(|c| c.to_string()).collect();
        assert_eq!(categories, table, "ACL categories of Valkey {version}");
    }
}
