//! Leader election through a `coordination.k8s.io` Lease in the operator's namespace, so two
//! replicas can run: only the holder reconciles; the other waits, ready to take over.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Lease validity and how long before expiry the holder renews it (seconds).
const LEASE_DURATION: u64 = 15;
const LEASE_GRACE: u64 = 5;

/// A running lease loop.
pub struct Leader {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Leader {
    /// Reads (or creates) the Lease and starts the renew loop. Returns once the lease state is known.
    pub async fn start(
        client: Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
    ) -> Result<Self> {
        let manager = LeaseManagerBuilder::new(client, lease_name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION)
            .with_grace(LEASE_GRACE)
            .with_field_manager(format!("sessionstore-operator-lease-{identity}"))
            .build()
            .await
            .map_err(|e| Error::Leader(format!("Lease {namespace}/{lease_name}: {e}")))?;
        let (state, task) = manager.watch().await;
        Ok(Leader { state, task })
    }

    /// Resolves once this replica holds the lease.
    pub async fn acquired(&mut self) -> Result<()> {
        self.state
            .wait_for(|leader| *leader)
            .await
            .map(|_| ())
            .map_err(|_| Error::Leader("the lease loop stopped".into()))
    }

    /// Resolves when this replica no longer holds the lease.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Releases the lease (if held) so the other replica takes over without waiting for expiry.
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
            Err(_) => tracing::warn!("timed out releasing the leader lease"),
        }
    }
}
