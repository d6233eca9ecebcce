//! The store conformance suite against a real etcd: one single-member cluster per case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Two stores under different prefixes of one etcd: neither sees the other's keys, and a
/// barrier gives a watcher of one a revision past the other's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_and_barriers_mark_progress() {
    use badge_store::Store;
    use futures::StreamExt;
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
        .await
        .expect("etcd started");
    let store = |prefix: &str| {
        let mut config = EtcdConfig::new(etcd.endpoints());
        config.prefix = prefix.to_string();
        EtcdStore::new(config).unwrap()
    };
    let (a, b) = (store("/one/registry"), store("/two/registry"));
    b.wait_ready(Duration::from_secs(10)).await.unwrap();
    let start = b.current_revision().await.unwrap();
    let mut watch = b.watch("", start).await.unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = a
            .create(&format!("/registry/things/t{i}"), bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    assert!(b.list("", Default::default()).await.unwrap().items.is_empty());
    let marker = b.barrier().await.unwrap().expect("etcd writes a marker");
    assert!(marker > last);
    let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the marker is delivered")
        .unwrap()
        .unwrap();
    assert_eq!(
        batch.len(),
        1,
        "only the marker, none of the other prefix's keys: {batch:?}"
    );
    assert_eq!(
        (batch[0].key.as_str(), batch[0].revision),
        (EtcdStore::BARRIER_KEY, marker)
    );
}

/// A member that stops answering (SIGSTOP: its connections stay open) ends the write it
/// took as a timeout, promptly and without retrying it elsewhere; reads and later writes
/// go to the other members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_ends_its_write_as_unknown_and_is_passed_over() {
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .expect("etcd started");
    let mut config = EtcdConfig::new(etcd.endpoints());
    // Far beyond the check on a stalled member: the write must not wait this out.
    config.request_timeout = Duration::from_secs(120);
    let store = EtcdStore::new(config).expect("store configured");
    let revision = store
        .create("/registry/configmaps/default/a", "1".into())
        .await
        .unwrap();

    // Requests go to the first member until it fails.
    etcd.pause(0);
    let write = store
        .update("/registry/configmaps/default/a", "2".into(), revision)
        .await;
    let Err(badge_store::Error::Timeout(message)) = write else {
        panic!("a write on a stopped member: {write:?}");
    };
    assert!(
        message.ends_with(
            "the member stopped answering with the write in flight; it may or may not have been applied"
        ),
        "{message}"
    );

    let (read, _) = store.get("/registry/configmaps/default/a").await.unwrap();
    let read = read.unwrap();
    store
        .update("/registry/configmaps/default/a", "3".into(), read.mod_revision)
        .await
        .unwrap();
    etcd.resume(0);
}

/// A batch is one transaction per 128 ops: its creates share a revision per transaction,
/// and a transaction whose compare fails is written op by op so the others still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_transaction_per_chunk() {
    use badge_store::BatchOp;
    let fixture = fixture().await;
    let store = fixture.store.as_ref();
    let create = |i: usize| BatchOp::Create {
        key: format!("/registry/batch/{i:03}"),
        value: bytes::Bytes::from(format!("v{i}")),
    };
    let before = store.current_revision().await.unwrap();
    let outcomes = store.write_batch((0..300).map(create).collect()).await;
    let revisions: Vec<i64> = outcomes.into_iter().map(Result::unwrap).collect();
    let mut distinct = revisions.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        [before + 1, before + 2, before + 3],
        "three transactions"
    );
    assert_eq!(revisions.iter().filter(|r| **r == before + 3).count(), 44);

    // A stale update in the first chunk: that chunk goes op by op, the second stays whole.
    let mut ops: Vec<BatchOp> = (300..450).map(create).collect();
    ops[5] = BatchOp::Update {
        key: "/registry/batch/000".into(),
        value: bytes::Bytes::from_static(b"lost"),
        expected: before,
    };
    let outcomes = store.write_batch(ops).await;
    assert!(matches!(outcomes[5], Err(badge_store::Error::Conflict { .. })));
    let landed: Vec<i64> = outcomes.iter().filter_map(|o| o.as_ref().ok().copied()).collect();
    let mut distinct = landed.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 127 + 1, "127 single writes, then one transaction");
    assert_eq!(store.current_revision().await.unwrap(), *landed.last().unwrap());
}
