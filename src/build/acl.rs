//! The Redis ACL file (`users.acl`): `default` off, and one least-privilege user per role.
//!
//! Passwords appear only as `#<sha256>` hashes, so the file (and a leaked copy of it) never holds
//! a clear-text password. Rules are those of the Redis ACL documentation where it gives them
//! (replication and Sentinel users); every rule is valid in Redis 7.0 and later and in Valkey 8.0
//! (`tests/redis_hardening.rs` loads the file and proves each user's rules on both servers).

use crate::build::credentials::StoreCredentials;
use crate::password::Password;
use crate::validate::ValidatedStore;

pub const DEFAULT_USER: &str = "default";
pub const APP_USER: &str = "app";
pub const OPERATOR_USER: &str = "operator";
pub const REPLICATION_USER: &str = "replication";
pub const SENTINEL_USER: &str = "sentinel";
pub const EXPORTER_USER: &str = "exporter";
pub const PROBE_USER: &str = "probe";

/// `default` is the user every unauthenticated connection is: off, no password, no rights, so a
/// client without credentials gets NOAUTH and `AUTH default <anything>` fails.
pub const DEFAULT_RULES: &str = "off resetpass resetkeys resetchannels -@all";

/// Commands the application user is refused on top of `disabledCommands`: everything `@dangerous`
/// (FLUSHALL, FLUSHDB, KEYS, CONFIG, DEBUG, SHUTDOWN, MONITOR, INFO, replication, ...) and
/// `@scripting` (EVAL, SCRIPT, FUNCTION, FCALL: scripts could touch keys outside the prefix
/// through dynamic names), plus the whole ACL command (WHOAMI and CAT are harmless, but an
/// application has no reason to inspect users). Also refused:
/// - `SELECT` (and `MOVE`, which sends a key to another database): sessions live in database 0,
///   and other databases are outside the key prefix's reach of every other rule.
/// - `RANDOMKEY`: it returns a key name from the whole keyspace, not only the prefix.
/// - `CLIENT TRACKING`: `BCAST PREFIX <p>` would deliver invalidation messages (key names) for
///   any prefix, and an ACL key pattern does not restrict tracking prefixes (checked on Redis 7.0:
///   `CLIENT TRACKING on BCAST PREFIX other:` answers OK to a user limited to `~session:*`). No
///   rule can allow only the store's prefix, so tracking is refused as a whole.
///
/// SCAN stays: session libraries list their own sessions with `SCAN MATCH <prefix>*`, and SCAN
/// returns every key NAME (never a value): one store serves one application.
pub const APP_BASE_DENY: &str =
    "-@dangerous -@scripting -acl -select -move -randomkey -client|tracking";

/// The operator's user, for health, rotation and primary management, and nothing else:
/// PING/INFO/ROLE/CONFIG GET for health and status; CLIENT SETNAME to name its connections;
/// ACL SETUSER/GETUSER/LOAD to add and retire application passwords live (ACL SETUSER is admin
/// power over users by nature: the operator already owns the Secret that holds every password);
/// REPLICAOF and FAILOVER to (re)attach replicas and hand the primary over before a pod restarts.
/// The deliberate handover (`ha::handover`) adds:
/// - CONFIG SET, used only for `replica-priority 0` on pods that must not be promoted. No
///   escalation: the operator user can already grant itself anything with ACL SETUSER, and Redis 7
///   protected configs keep `dir`/`dbfilename` (the classic CONFIG SET file-write abuse) off-limits
///   at run time whatever the ACL says.
/// - CLIENT PAUSE/UNPAUSE, to hold writes on the primary while a replica catches up and the
///   Sentinels promote it; CLIENT KILL, to close the demoted primary's client connections so
///   applications reconnect to the new primary (Sentinel's user has it for the same reason).
///
/// No key access, no data commands. (AUTH and HELLO need no rule: Redis always allows them.)
pub const OPERATOR_RULES: &str = "resetkeys resetchannels -@all +ping +info +role +config|get \
     +config|set +client|setname +client|pause +client|unpause +client|kill +acl|setuser \
     +acl|getuser +acl|load +replicaof +failover";

/// Redis docs ("ACL rules for Sentinel and Replicas"): a replica needs only PSYNC, REPLCONF, PING.
pub const REPLICATION_RULES: &str = "resetkeys resetchannels -@all +psync +replconf +ping";

/// Redis docs: what Sentinel needs on a monitored Redis (it talks over `__sentinel__:hello`).
pub const SENTINEL_RULES: &str = "resetkeys allchannels -@all +multi +slaveof +ping +exec +subscribe \
     +config|rewrite +role +publish +info +client|setname +client|kill +script|kill";

/// The redis_exporter sidecar's user: the read-only commands of its default scrape that return
/// statistics only (PING, CLIENT SETNAME, INFO ALL, LATENCY LATEST/HISTOGRAM, SLOWLOG LEN), so a
/// compromised metrics container can read counters but no key name, no value, no user and change
/// nothing. The exporter tolerates each refusal and only loses the metrics built from it:
/// - not CONFIG GET: it returns `masterauth` in clear text (checked on Redis 7.0), and the
///   replication password can PSYNC a full copy of every session (loses `config_maxmemory`,
///   `config_maxclients`; INFO has `maxmemory` too);
/// - not SLOWLOG GET: its entries are whole commands with their arguments (`SET session:<id>
///   <value>`), readable as soon as `slowlog-log-slower-than` is low (loses `slowlog_last_id`,
///   `last_slow_execution_duration_seconds`; `slowlog_length` stays).
///
/// Nothing granted returns a key name or a command argument: INFO's keyspace section counts keys
/// per database, LATENCY names events and command names only.
pub const EXPORTER_RULES: &str = "resetkeys resetchannels -@all +ping +client|setname +info \
     +latency|latest +latency|histogram +slowlog|len";

/// The kubelet's probes: `PING` and nothing else. AUTH needs no rule, and a loading server answers
/// `-LOADING` to an authenticated PING, which the liveness probe accepts. The probe's password is
/// the only one its script reads.
pub const PROBE_RULES: &str = "resetkeys resetchannels -@all +ping";

/// The application user's rules: its key prefix, everything but the deny-list.
pub fn app_rules(store: &ValidatedStore) -> String {
    let mut rules = format!(
        "resetkeys ~{}* resetchannels +@all {APP_BASE_DENY}",
        store.key_prefix
    );
    for command in &store.disabled_commands {
        rules.push_str(" -");
        rules.push_str(command);
    }
    rules
}

/// The ACL rules of every user without their passwords: hashed into the config hash, so a rule
/// change rolls the pods while a password rotation (done live) does not. Also what the operator
/// sends with `ACL SETUSER` (rules never contain `reset`/`resetpass` for enabled users, so they
/// leave passwords alone).
pub fn acl_rules(store: &ValidatedStore) -> Vec<(String, String)> {
    vec![
        (DEFAULT_USER.into(), DEFAULT_RULES.into()),
        (APP_USER.into(), app_rules(store)),
        (OPERATOR_USER.into(), OPERATOR_RULES.into()),
        (REPLICATION_USER.into(), REPLICATION_RULES.into()),
        (SENTINEL_USER.into(), SENTINEL_RULES.into()),
        (EXPORTER_USER.into(), EXPORTER_RULES.into()),
        (PROBE_USER.into(), PROBE_RULES.into()),
    ]
}

/// HMAC-SHA256 (RFC 2104) with the `sha2` the crate already has.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The exporter user's password, derived from the operator's (HMAC-SHA256, hex): its own
/// password, which reveals nothing about the operator's, without a new stored credential that
/// every reader of the Secrets would have to learn. It changes whenever the operator password does,
/// and both land in the same internal Secret, so they never disagree.
pub fn exporter_password(credentials: &StoreCredentials) -> Password {
    let mac = hmac_sha256(
        credentials.operator.expose().as_bytes(),
        b"sessionstore.dev/exporter-password/v1",
    );
    Password::from_secret_value(hex::encode(mac))
}

/// The passwords a user accepts: the app user keeps its previous one during a rotation.
fn passwords(user: &str, credentials: &StoreCredentials) -> Vec<Password> {
    match user {
        APP_USER => std::iter::once(&credentials.app)
            .chain(credentials.app_previous.as_ref())
            .cloned()
            .collect(),
        OPERATOR_USER => vec![credentials.operator.clone()],
        REPLICATION_USER => vec![credentials.replication.clone()],
        SENTINEL_USER => vec![credentials.sentinel.clone()],
        EXPORTER_USER => vec![exporter_password(credentials)],
        PROBE_USER => vec![credentials.probe.clone()],
        _ => Vec::new(),
    }
}

/// The whole ACL file: one `user` line per user, passwords as SHA-256 hashes.
pub fn users_acl(store: &ValidatedStore, credentials: &StoreCredentials) -> String {
    let mut out = String::new();
    for (user, rules) in acl_rules(store) {
        out.push_str("user ");
        out.push_str(&user);
        if user != DEFAULT_USER {
            out.push_str(" on");
            for password in passwords(&user, credentials) {
                out.push(' ');
                out.push_str(&password.acl_hash());
            }
        }
        out.push(' ');
        out.push_str(&rules);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SessionStore;
    use crate::validate::validate;

    fn store(extra_spec: &str) -> ValidatedStore {
        let yaml = format!(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\nmetadata: {{name: s, namespace: n}}\n\
             spec:\n  clients: {{podSelector: {{}}}}\n{extra_spec}"
        );
        let store: SessionStore = serde_yaml::from_str(&yaml).expect("test manifest");
        validate(&store).expect("valid test manifest")
    }

    fn credentials(previous: bool) -> StoreCredentials {
        StoreCredentials {
            app: Password::from_secret_value("app-pw".into()),
            app_previous: previous.then(|| Password::from_secret_value("old-pw".into())),
            operator: Password::from_secret_value("op-pw".into()),
            replication: Password::from_secret_value("repl-pw".into()),
            sentinel: Password::from_secret_value("sent-pw".into()),
            probe: Password::from_secret_value("probe-pw".into()),
        }
    }

    fn hash(p: &str) -> String {
        Password::from_secret_value(p.into()).acl_hash()
    }

    #[test]
    fn whole_acl_file_with_defaults() {
        let acl = users_acl(&store(""), &credentials(false));
        let expected = format!(
            "user default off resetpass resetkeys resetchannels -@all\n\
             user app on {} resetkeys ~session:* resetchannels +@all -@dangerous -@scripting -acl -select -move -randomkey -client|tracking\n\
             user operator on {} {OPERATOR_RULES}\n\
             user replication on {} resetkeys resetchannels -@all +psync +replconf +ping\n\
             user sentinel on {} {SENTINEL_RULES}\n\
             user exporter on {} {EXPORTER_RULES}\n\
             user probe on {} resetkeys resetchannels -@all +ping\n",
            hash("app-pw"),
            hash("op-pw"),
            hash("repl-pw"),
            hash("sent-pw"),
            exporter_password(&credentials(false)).acl_hash(),
            hash("probe-pw"),
        );
        pretty_assertions::assert_eq!(acl, expected);
    }

    #[test]
    fn key_prefix_disabled_commands_and_previous_password_reach_the_app_user() {
        let store = store(
            "  sessions: {keyPrefix: \"web:\"}\n  disabledCommands: [SORT_RO, \"client|list\", \"@pubsub\"]\n",
        );
        let acl = users_acl(&store, &credentials(true));
        let app = acl.lines().nth(1).expect("app line");
        assert_eq!(
            app,
            format!(
                "user app on {} {} resetkeys ~web:* resetchannels +@all -@dangerous -@scripting -acl -select -move -randomkey -client|tracking -sort_ro -client|list -@pubsub",
                hash("app-pw"),
                hash("old-pw")
            )
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_test_cases() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn exporter_password_is_its_own_and_follows_the_operator_password() {
        let creds = credentials(false);
        let exporter = exporter_password(&creds);
        assert_eq!(exporter.expose().len(), 64);
        for other in [
            &creds.app,
            &creds.operator,
            &creds.replication,
            &creds.sentinel,
            &creds.probe,
        ] {
            assert!(*other != exporter);
        }
        assert!(exporter == exporter_password(&creds.clone()));
        let mut rotated = creds.clone();
        rotated.operator = Password::from_secret_value("op-pw-2".into());
        assert!(exporter_password(&rotated) != exporter);
    }

    #[test]
    fn no_clear_text_password_in_the_file() {
        let creds = credentials(true);
        let acl = users_acl(&store(""), &creds);
        let exporter = exporter_password(&creds);
        for clear in [
            "app-pw",
            "old-pw",
            "op-pw",
            "repl-pw",
            "sent-pw",
            "probe-pw",
            exporter.expose(),
        ] {
            assert!(!acl.contains(clear), "{clear} in clear text");
        }
    }

    #[test]
    fn rules_carry_no_password_so_rotation_keeps_the_config_hash() {
        for (_, rules) in acl_rules(&store("")) {
            assert!(!rules.contains('#') && !rules.contains('>'), "{rules}");
            assert!(
                !rules
                    .split(' ')
                    .any(|r| r == "reset" || r == "resetpass" || r == "nopass")
                    || rules == DEFAULT_RULES
            );
        }
    }
}
