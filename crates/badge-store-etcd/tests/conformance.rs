//! The store conformance suite against a real etcd: one single-member cluster per case.
#![allow(clippy::unwrap_used)]

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

/// TLS with client certificates, as production clusters run: the store connects with the
/// CA and client certificate, and is refused without the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use badge_store::Store;
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start_tls(1))
        .await
        .expect("etcd started");
    let tls = etcd.tls().expect("a TLS cluster");
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.ca_pem = Some(std::fs::read(&tls.ca_file).unwrap());
    config.client_cert_pem = Some(std::fs::read(&tls.client_cert).unwrap());
    config.client_key_pem = Some(std::fs::read(&tls.client_key).unwrap());
    config.request_timeout = Duration::from_secs(3);
    let store = EtcdStore::new(config.clone()).unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    let revision = store
        .create("/registry/tls/a", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get("/registry/tls/a")
            .await
            .unwrap()
            .0
            .unwrap()
            .mod_revision,
        revision
    );

    config.client_cert_pem = None;
    config.client_key_pem = None;
    let anonymous = EtcdStore::new(config).unwrap();
    assert!(
        anonymous.get("/registry/tls/a").await.is_err(),
        "a client without a certificate is refused"
    );
}
