//! Servers on a real etcd cluster seen from outside while members die, lose quorum or
//! are paused: the history clients record is linearizable, writes without quorum fail
//! with the Status the README names, and a paused member or server loses nothing.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use badge_testkit::etcd::EtcdCluster;
use badge_testkit::linearizability::{self, CasOutcome, Op, Operation, Verdict};
use badge_testkit::{Credential, RawResponse, TestServer, kubectl_path};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn start_pair(etcd: &EtcdCluster) -> (TestServer, TestServer) {
    start_pair_on(&etcd.endpoints_flag())
}

fn start_pair_on(servers: &str) -> (TestServer, TestServer) {
    let args = ["--storage", "etcd", "--etcd-servers", servers];
    let a = TestServer::start_with(BIN, &args);
    let b = TestServer::start_sharing_pki(BIN, &args, &a);
    (a, b)
}

fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> std::io::Result<RawResponse> {
    server.request(
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
        &[("Content-Type", "application/json")],
        Credential::Admin,
    )
}

fn create_configmap(server: &TestServer, name: &str) -> RawResponse {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    send(
        server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(body),
    )
    .unwrap()
}

fn listed_configmaps(server: &TestServer) -> String {
    server.kubectl_ok(&["get", "configmaps", "-o", "name"])
}

/// Polls `check` until it returns true or `limit` passes.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

const REGISTER: &str = "/api/v1/namespaces/default/configmaps/register";

#[test]
fn ha_history_of_one_object_is_linearizable_across_a_leader_kill() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = start_pair(&etcd);
    let created = send(
        &a,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "register"}, "data": {"v": "initial"}})),
    )
    .unwrap();
    assert_eq!(created.status, 201);

    const CLIENTS: usize = 4;
    // Two operations a round (a read, then a swap on what it read): at most 288 in all.
    const ROUNDS: usize = 36;
    let clock = Instant::now();
    let finished_ops = AtomicUsize::new(0);
    let history: Vec<Operation> = std::thread::scope(|scope| {
        let servers = [&a, &b];
        let finished_ops = &finished_ops;
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    let mut history = vec![];
                    for round in 0..ROUNDS {
                        // Each round reads through one server and writes through the other.
                        let reader = servers[(client + round) % 2];
                        let writer = servers[(client + round + 1) % 2];
                        // A consistent read: no resourceVersion.
                        let invoked = clock.elapsed();
                        let read = send(reader, "GET", REGISTER, None);
                        let returned = clock.elapsed();
                        finished_ops.fetch_add(1, Ordering::SeqCst);
                        // A failed read changed nothing and tells nothing.
                        let read = match read {
                            Ok(read) if read.status == 200 => read,
                            _ => continue,
                        };
                        let mut object = read.json();
                        let value = object["data"]["v"].as_str().unwrap().to_string();
                        history.push(Operation {
                            client,
                            invoked,
                            returned,
                            op: Op::Read { value: value.clone() },
                        });
                        // Values are unique, so the resourceVersion read stands for the
                        // value read: the update is a compare-and-swap on the value.
                        let new = format!("c{client}-r{round}");
                        object["data"] = json!({"v": new});
                        let invoked = clock.elapsed();
                        let put = send(writer, "PUT", REGISTER, Some(object));
                        let returned = clock.elapsed();
                        finished_ops.fetch_add(1, Ordering::SeqCst);
                        let outcome = match put {
                            Ok(r) if r.status == 200 => CasOutcome::Ok,
                            Ok(r) if r.status == 409 => {
                                assert_eq!(r.json()["reason"], "Conflict");
                                CasOutcome::Conflict
                            }
                            Ok(r) if r.status >= 500 => CasOutcome::Unknown,
                            Ok(r) => panic!("update answered {}: {}", r.status, r.json()),
                            Err(_) => CasOutcome::Unknown,
                        };
                        history.push(Operation {
                            client,
                            invoked,
                            returned,
                            op: Op::Cas {
                                expected: value,
                                new,
                                outcome,
                            },
                        });
                    }
                    history
                })
            })
            .collect();
        let wait_for_ops = |count: usize| {
            while finished_ops.load(Ordering::SeqCst) < count && !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // The leader dies a third of the way in and comes back a while later.
        wait_for_ops(CLIENTS * ROUNDS * 2 / 3);
        let leader = etcd.wait_leader(Duration::from_secs(10));
        etcd.kill(leader);
        let at_kill = finished_ops.load(Ordering::SeqCst);
        wait_for_ops(CLIENTS * ROUNDS * 2 / 3 + 60);
        etcd.restart(leader);
        let history: Vec<Operation> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        assert!(
            at_kill < finished_ops.load(Ordering::SeqCst),
            "the clients were still at it when the leader died"
        );
        history
    });
    etcd.wait_healthy(Duration::from_secs(30));

    let count = |want: fn(&Op) -> bool| history.iter().filter(|o| want(&o.op)).count();
    let swapped = count(|op| {
        matches!(
            op,
            Op::Cas {
                outcome: CasOutcome::Ok,
                ..
            }
        )
    });
    let conflicts = count(|op| {
        matches!(
            op,
            Op::Cas {
                outcome: CasOutcome::Conflict,
                ..
            }
        )
    });
    let unknown = count(|op| {
        matches!(
            op,
            Op::Cas {
                outcome: CasOutcome::Unknown,
                ..
            }
        )
    });
    eprintln!(
        "history: {} operations, {swapped} swapped, {conflicts} conflicts, {unknown} unknown",
        history.len()
    );
    assert!(swapped > 0 && conflicts > 0, "the clients contended");
    match linearizability::check("initial", &history, 2_000_000) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable(why) => panic!("the history is not linearizable: {why}"),
        Verdict::Undecided { visited } => {
            panic!("the linearizability search gave up after {visited} configurations")
        }
    }
}

#[test]
fn ha_a_write_without_quorum_fails_with_a_status_not_a_hang() {
    // A long election timeout keeps the survivor believing in its dead leader for seconds,
    // so the first write is certainly taken by a member that cannot commit it.
    let mut etcd = EtcdCluster::start_with_args(3, &["--election-timeout=3000"]);
    let survivor = 0;
    let endpoint = etcd.endpoints()[survivor].clone();
    // A request timeout far beyond etcd's own: the write must not wait that out.
    let server = TestServer::start_with(
        BIN,
        &[
            "--storage",
            "etcd",
            "--etcd-servers",
            &endpoint,
            "--etcd-request-timeout=120s",
        ],
    );
    assert_eq!(create_configmap(&server, "before").status, 201);

    etcd.kill(1);
    etcd.kill(2);
    // Sent, then never answered: its fate is unknown, so 504, never retried.
    let first = create_configmap(&server, "first");
    let status = first.json();
    assert_eq!(first.status, 504, "{status}");
    assert_eq!(status["reason"], "Timeout");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "storage timeout: {endpoint}: the member lost its leader"
        )) && message.ends_with("it may or may not have been applied"),
        "{message}"
    );

    // Once the member knows it has no leader it refuses at once: 503.
    within(Duration::from_secs(30), "the survivor to notice", || {
        !etcd.member_healthy(survivor)
    });
    let next = create_configmap(&server, "next");
    let status = next.json();
    assert_eq!(next.status, 503, "{status}");
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(
        status["message"],
        format!("storage unavailable: {endpoint}: etcdserver: no leader")
    );

    etcd.restart(1);
    etcd.restart(2);
    etcd.wait_healthy(Duration::from_secs(30));
    within(Duration::from_secs(30), "writes after recovery", || {
        create_configmap(&server, "after").status == 201
    });
}

#[test]
fn ha_a_paused_member_is_passed_over_and_loses_nothing() {
    let etcd = EtcdCluster::start(3);
    // Both servers start on the leader, the first member they are given; it stops
    // answering, and the others elect a new leader.
    let leader = etcd.wait_leader(Duration::from_secs(10));
    let mut endpoints = etcd.endpoints();
    endpoints.swap(0, leader);
    let (a, b) = start_pair_on(&endpoints.join(","));
    assert_eq!(create_configmap(&a, "before-a").status, 201);
    assert_eq!(create_configmap(&b, "before-b").status, 201);
    etcd.pause(leader);

    let mut acknowledged = vec!["before-a".to_string(), "before-b".to_string()];
    let mut unknown = 0;
    for i in 0..20 {
        for (server, side) in [(&a, "a"), (&b, "b")] {
            let name = format!("paused-{side}-{i}");
            let response = create_configmap(server, &name);
            match response.status {
                201 => acknowledged.push(name),
                // A write sent to the member as it stopped: its fate is unknown.
                504 => unknown += 1,
                other => panic!("{name}: {other} {}", response.json()),
            }
        }
    }
    // At most the write in flight on each server when the member stopped.
    assert!(unknown <= 2, "{unknown} writes timed out");

    // Consistent lists, while the member is stopped and after it goes on.
    let check_listed = |when: &str| {
        for server in [&a, &b] {
            let listed = listed_configmaps(server);
            for name in &acknowledged {
                assert!(
                    listed.contains(&format!("configmap/{name}\n")),
                    "{when}: lost {name}: {listed}"
                );
            }
        }
    };
    check_listed("while paused");
    etcd.resume(leader);
    check_listed("resumed");
}

/// Compacts etcd at its current revision.
fn compact(endpoint: &str) {
    use badge_store::Store;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = badge_store_etcd::EtcdConfig::new(vec![endpoint.to_string()]);
        let store = badge_store_etcd::EtcdStore::new(config).unwrap();
        let current = store.current_revision().await.unwrap();
        store.compact(current).await.unwrap();
    });
}

/// Lines of a running command's stdout and stderr, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for mut stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(&mut stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    lines
}

#[test]
fn ha_a_paused_server_s_watches_go_on_or_end_with_410() {
    let etcd = EtcdCluster::start(1);
    let (paused, writer) = start_pair(&etcd);
    assert_eq!(create_configmap(&paused, "before").status, 201);
    let mut watch = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(paused.kubeconfig())
        .args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watch);
    let mut seen: Vec<String> = vec![];
    let mut wait_for = |want: &dyn Fn(&[String]) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !want(&seen) {
            let left = deadline.checked_duration_since(Instant::now());
            match left.map(|left| lines.recv_timeout(left)) {
                Some(Ok(line)) => seen.push(line),
                _ => panic!("the watch never showed {what}; it showed:\n{}", seen.join("\n")),
            }
        }
        seen.clone()
    };
    let has = |name: &'static str| move |seen: &[String]| seen.iter().any(|l| l == name);
    wait_for(&has("configmap/before"), "the listed object");
    // The watch is open once an object created after the list shows up in it.
    assert_eq!(create_configmap(&writer, "opened").status, 201);
    wait_for(&has("configmap/opened"), "an object created after the list");

    let pid = paused.pid().unwrap();
    signal(pid, "-STOP");
    let written: Vec<String> = (0..5).map(|i| format!("configmap/while-paused-{i}")).collect();
    for name in &written {
        let name = name.strip_prefix("configmap/").unwrap();
        assert_eq!(create_configmap(&writer, name).status, 201);
    }
    // History the stopped server has not read yet may be compacted away meanwhile.
    compact(&etcd.endpoints()[0]);
    signal(pid, "-CONT");
    assert_eq!(create_configmap(&writer, "after").status, 201);

    let expired = |seen: &[String]| {
        seen.iter()
            .any(|l| l.contains("too old resource version") || l.contains("Expired"))
    };
    let seen = wait_for(
        &|seen: &[String]| expired(seen) || seen.iter().any(|l| l == "configmap/after"),
        "the objects written while paused, or 410",
    );
    let _ = watch.kill();
    let _ = watch.wait();
    eprintln!("after the pause the watch showed:\n{}", seen.join("\n"));
    if !expired(&seen) {
        // It went on: everything written while it was stopped, once each, in order.
        let after_open: Vec<&String> = seen
            .iter()
            .skip_while(|l| *l != "configmap/opened")
            .skip(1)
            .collect();
        let mut expected: Vec<&String> = written.iter().collect();
        let after = "configmap/after".to_string();
        expected.push(&after);
        assert_eq!(after_open, expected, "the watch showed:\n{}", seen.join("\n"));
    }
}
