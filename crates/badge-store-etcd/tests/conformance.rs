//! The store conformance suite against a real etcd: one single-member cluster per case.

use std::sync::Arc;
use std::time::Duration;

use badge_store::Store;
use badge_store_etcd::{EtcdConfig, EtcdStore};
use badge_testkit::etcd::EtcdCluster;

struct Fixture {
    store: Arc<dyn Store>,
    _etcd: EtcdCluster,
}

impl AsRef<dyn Store> for Fixture {
    fn as_ref(&self) -> &(dyn Store + 'static) {
        self.store.as_ref()
    }
}

async fn fixture() -> Fixture {
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
        .await
        .expect("etcd started");
    let store = EtcdStore::new(EtcdConfig::new(etcd.endpoints())).expect("store configured");
    store
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("etcd answers");
    Fixture {
        store: Arc::new(store),
        _etcd: etcd,
    }
}

badge_store::conformance_tests!(fixture);
