#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::plugin::{self, PluginKeys};
use super::proto::EncryptedObject;
use super::*;

/// The reference plugin on its own thread and runtime, so the blocking calls of the
/// transformer under test never starve it.
struct Plugin {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Plugin {
    fn start(socket: &Path, key_file: &Path) -> Plugin {
        let keys = Arc::new(PluginKeys::load_or_create(key_file).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, listening) = std::sync::mpsc::sync_channel(1);
        let socket = socket.to_path_buf();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = plugin::bind(&socket).unwrap();
                ready.send(()).unwrap();
                plugin::serve(listener, keys, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        listening.recv().unwrap();
        Plugin {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops serving and drops every open connection with the plugin's runtime.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fast() -> KmsTimings {
    KmsTimings {
        status_interval: Duration::from_millis(100),
        retry_interval: Duration::from_millis(100),
        write_ttl: Duration::from_millis(600),
    }
}

fn provider(socket: &Path) -> KmsV2 {
    KmsV2::new("test", socket.to_path_buf(), Duration::from_millis(500), fast())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let key_file = dir.path().join("kms.key");
    (dir, socket, key_file)
}

const AAD: &[u8] = b"/registry/secrets/default/s";

#[test]
fn hkdf_expand_is_rfc5869() {
    // RFC 5869 test case 1: the PRK and info given, the first 32 bytes of the OKM.
    let prk = hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
    let info = hex("f0f1f2f3f4f5f6f7f8f9");
    assert_eq!(
        hkdf_expand(&prk, &info).unwrap().to_vec(),
        hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
    );
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn values_are_sealed_under_a_seed_the_plugin_encrypted_once() {
    let (_dir, socket, key_file) = setup();
    let _plugin = Plugin::start(&socket, &key_file);
    let kms = provider(&socket);

    let first = kms.seal(b"top secret", AAD).unwrap();
    let second = kms.seal(b"top secret", AAD).unwrap();
    assert_ne!(first, second, "every write has its own info and nonce");
    assert!(!first.windows(10).any(|w| w == b"top secret"));
    let a = EncryptedObject::decode(first.as_slice()).unwrap();
    let b = EncryptedObject::decode(second.as_slice()).unwrap();
    assert_eq!(
        a.encrypted_dek_source, b.encrypted_dek_source,
        "one seed for both writes"
    );
    assert_eq!(
        a.encrypted_dek_source_type,
        proto::HKDF_SHA256_XNONCE_AES_GCM_SEED
    );
    assert_eq!(Some(a.key_id.clone()), kms.write_key_id());

    assert_eq!(kms.open(&first, AAD).unwrap(), b"top secret");
    assert_eq!(kms.open(&second, AAD).unwrap(), b"top secret");
    // Bound to its store key.
    assert_eq!(
        kms.open(&first, b"/registry/secrets/default/other").unwrap_err(),
        "cipher: message authentication failed"
    );
    assert_eq!(kms.cache().len(), 1);
}

#[test]
fn cached_deks_read_while_the_plugin_is_down_and_writes_stop_at_the_ttl() {
    let (_dir, socket, key_file) = setup();
    let mut plugin = Plugin::start(&socket, &key_file);
    let kms = provider(&socket);
    let stored = kms.seal(b"value", AAD).unwrap();
    plugin.stop();

    // The seed is cached: reads go on.
    assert_eq!(kms.open(&stored, AAD).unwrap(), b"value");
    // Writes go on until the seed has gone unconfirmed for the TTL, then fail.
    wait_until("writes fail", || kms.seal(b"later", AAD).is_err());
    let error = kms.seal(b"later", AAD).unwrap_err();
    assert!(error.contains("expired at"), "{error}");
    assert_eq!(kms.open(&stored, AAD).unwrap(), b"value");

    // A provider with an empty cache needs the plugin to read.
    let fresh = provider(&socket);
    let error = fresh.open(&stored, AAD).unwrap_err();
    assert!(error.starts_with("failed to decrypt DEK, error: "), "{error}");
    assert!(fresh.cache().is_empty());

    // Back up: the first provider writes again, the fresh one reads and caches.
    let _plugin = Plugin::start(&socket, &key_file);
    wait_until("writes resume", || kms.seal(b"later", AAD).is_ok());
    wait_until("the fresh provider has a seed", || fresh.write_key_id().is_some());
    assert_eq!(fresh.open(&stored, AAD).unwrap(), b"value");
    assert_eq!(
        fresh.cache().len(),
        2,
        "the read seed and the fresh provider's own"
    );
}

#[test]
fn a_new_key_id_from_status_makes_writes_use_a_new_seed() {
    let (_dir, socket, key_file) = setup();
    let _plugin = Plugin::start(&socket, &key_file);
    let kms = provider(&socket);
    let before = kms.seal(b"before", AAD).unwrap();
    let old_id = kms.write_key_id().unwrap();

    // The plugin's key rotates: a new key on top, the old one kept for reads.
    let old = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, format!("{}\n{old}", plugin::new_key_line())).unwrap();
    wait_until("the key id changes", || {
        kms.write_key_id().as_deref() != Some(old_id.as_str())
    });

    let after = kms.seal(b"after", AAD).unwrap();
    let (a, b) = (
        EncryptedObject::decode(before.as_slice()).unwrap(),
        EncryptedObject::decode(after.as_slice()).unwrap(),
    );
    assert_eq!(a.key_id, old_id);
    assert_ne!(b.key_id, old_id);
    assert_ne!(a.encrypted_dek_source, b.encrypted_dek_source);

    // A provider that never saw either seed reads both through the plugin.
    let fresh = provider(&socket);
    assert_eq!(fresh.open(&before, AAD).unwrap(), b"before");
    assert_eq!(fresh.open(&after, AAD).unwrap(), b"after");
}

#[test]
fn the_dek_cache_is_bounded() {
    let cache = DekCache::default();
    for i in 0..DEK_CACHE_MAX + 10 {
        cache.insert(
            i.to_be_bytes().to_vec(),
            Arc::new(Dek {
                source_type: proto::HKDF_SHA256_XNONCE_AES_GCM_SEED,
                key: vec![0; 32],
            }),
        );
    }
    assert_eq!(cache.len(), DEK_CACHE_MAX);
    assert!(cache.get(&(DEK_CACHE_MAX + 9).to_be_bytes()).is_some());
}
