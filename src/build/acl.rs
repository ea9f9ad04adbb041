//! The Redis ACL file (`users.acl`): `default` off, and one least-privilege user per role.

use crate::build::StoreCredentials;
use crate::validate::ValidatedStore;

pub const APP_USER: &str = "app";
pub const OPERATOR_USER: &str = "operator";
pub const REPLICATION_USER: &str = "replication";
pub const SENTINEL_USER: &str = "sentinel";

/// The ACL rules of every user without their passwords: hashed into the config hash, so a rule
/// change rolls the pods while a password rotation (done live) does not.
pub fn acl_rules(store: &ValidatedStore) -> Vec<(String, String)> {
    let mut app = format!("resetkeys ~{}* resetchannels +@all -@dangerous -@scripting", store.key_prefix);
    for command in &store.disabled_commands {
        app.push_str(&format!(" -{command}"));
    }
    vec![
        ("default".into(), "off resetkeys resetchannels -@all".into()),
        (APP_USER.into(), app),
        (OPERATOR_USER.into(), "resetkeys resetchannels -@all +ping +info +config|get +acl|setuser +acl|deluser +acl|load +acl|whoami +client|setname +role +replicaof +failover".into()),
        (REPLICATION_USER.into(), "resetkeys resetchannels -@all +psync +replconf +ping".into()),
        (SENTINEL_USER.into(), "resetkeys allchannels -@all +multi +slaveof +replicaof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill".into()),
    ]
}

/// The whole ACL file, passwords as SHA-256 hashes.
pub fn users_acl(store: &ValidatedStore, credentials: &StoreCredentials) -> String {
    let mut out = String::new();
    for (user, rules) in acl_rules(store) {
        let passwords = match user.as_str() {
            APP_USER => {
                let mut p = vec![credentials.app.acl_hash()];
                if let Some(previous) = &credentials.app_previous {
                    p.push(previous.acl_hash());
                }
                p
            }
            OPERATOR_USER => vec![credentials.operator.acl_hash()],
            REPLICATION_USER => vec![credentials.replication.acl_hash()],
            SENTINEL_USER => vec![credentials.sentinel.acl_hash()],
            _ => vec![],
        };
        let on = if user == "default" { "" } else { "on " };
        out.push_str(&format!("user {user} {on}"));
        for p in passwords {
            out.push_str(&p);
            out.push(' ');
        }
        out.push_str(&rules);
        out.push('\n');
    }
    out
}
