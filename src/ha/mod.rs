//! High availability at run time: which pod is the primary according to the Sentinels, and what
//! the controller must change (role labels) so the ClusterIP Service follows it, and the rolling
//! update that restarts replicas first and hands the primary role over before restarting it.

pub mod disruption;
pub mod handover;
pub mod hooks;
pub mod memo;
pub mod observation;
pub mod primary;
pub mod rollout;
pub mod rollout_step;
pub mod scale;
pub mod step;

pub use primary::{
    DiscoveryError, DiscoveryOptions, PrimaryAnswer, Role, RoleChange, desired_role_labels,
    discover_primary, pod_for_host, role_label_changes,
};
