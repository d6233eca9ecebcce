//! How the server's heap gives memory back. glibc's malloc keeps what a burst of writes freed
//! (the decoded requests, records and store events of a usage flush) as holes between the
//! objects the watch cache keeps, and returns only the free top of each arena: after 100,000
//! IssuedToken records a third of the resident heap was free. Two settings change that: no
//! more arenas than cores (each arena keeps its own holes), and, after a burst of cache
//! changes, the free pages inside the arenas handed back to the kernel.
//!
//! On other C libraries both are no-ops.

use std::time::Duration;

/// Limits malloc to one arena per core (glibc's default is eight). Called first thing in
/// `main`, before any other thread exists.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tunable of the allocator, takes the allocator's own
        // lock, and has no precondition on its arguments (an invalid one returns 0). No
        // memory of the program is read or written.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Hands the whole free pages inside malloc's arenas back to the kernel.
fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock and only advises the kernel that pages
    // of free chunks are unused (MADV_DONTNEED); memory that is allocated is never touched,
    // so no live allocation of any thread can change under it.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How many cache revisions make a burst worth trimming after.
const BURST: badge_store::Revision = 1000;
/// How long the cache must stay still for a burst to be over.
const QUIET: Duration = Duration::from_millis(100);

/// Releases free pages after every burst of at least [`BURST`] cache changes, once the
/// cache has stayed still for [`QUIET`]: a usage flush of a thousand records, a relist.
/// Steady traffic of a few writes never triggers it.
pub(crate) async fn release_after_bursts(revisions: tokio::sync::watch::Receiver<badge_store::Revision>) {
    after_bursts(revisions, || async {
        let _ = tokio::task::spawn_blocking(release_free_pages).await;
    })
    .await;
}

/// Runs `release` after every burst, as [`release_after_bursts`] describes.
async fn after_bursts<F: std::future::Future<Output = ()>>(
    mut revisions: tokio::sync::watch::Receiver<badge_store::Revision>,
    release: impl Fn() -> F,
) {
    let mut released_at = *revisions.borrow_and_update();
    loop {
        if revisions.changed().await.is_err() {
            return;
        }
        if revisions.borrow_and_update().saturating_sub(released_at) < BURST {
            continue;
        }
        // The burst goes on while changes keep coming within QUIET of each other.
        loop {
            match tokio::time::timeout(QUIET, revisions.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        released_at = *revisions.borrow_and_update();
        release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Lets the task under test run until it waits on time or on the channel.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_released_once_after_each_burst_and_never_for_a_trickle() {
        let (tx, rx) = tokio::sync::watch::channel(5);
        let released = Arc::new(AtomicUsize::new(0));
        let counter = released.clone();
        let task = tokio::spawn(after_bursts(rx, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        }));
        // A trickle: far apart, and a thousand short of a burst in all.
        for revision in (6..1000).step_by(97) {
            tx.send_replace(revision);
            settle().await;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        settle().await;
        assert_eq!(released.load(Ordering::SeqCst), 0);
        // A flush: a thousand changes, each within QUIET of the last. Nothing until it ends.
        for revision in (1000..=2000).step_by(100) {
            tx.send_replace(revision);
            settle().await;
            tokio::time::advance(QUIET / 2).await;
            settle().await;
            assert_eq!(
                released.load(Ordering::SeqCst),
                0,
                "released mid-burst at {revision}"
            );
        }
        tokio::time::advance(QUIET).await;
        settle().await;
        assert_eq!(released.load(Ordering::SeqCst), 1);
        // Counted from where the last release was: 999 more is not yet a burst, 1000 is.
        tx.send_replace(2999);
        settle().await;
        tokio::time::advance(QUIET * 2).await;
        settle().await;
        assert_eq!(released.load(Ordering::SeqCst), 1);
        tx.send_replace(3000);
        settle().await;
        tokio::time::advance(QUIET * 2).await;
        settle().await;
        assert_eq!(released.load(Ordering::SeqCst), 2);
        // The cache gone, the task ends.
        drop(tx);
        settle().await;
        assert!(task.is_finished());
    }
}
