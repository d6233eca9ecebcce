//! The command line itself: usage errors exit at once with clap's message, boolean flags
//! parse as Go's pflag, `badge token inspect` fails when the token does not verify, and the
//! last log lines are written before the server exits.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use badge_testkit::TestServer;

use crate::eventually;

/// Waits for `child` at most twenty seconds; a child still running then is killed and the
/// test fails.
fn wait_bounded(child: &mut std::process::Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`badge {what}` did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs badge with stderr to a pipe; returns its exit status and stderr.
fn run_to_pipe(args: &[&str]) -> (ExitStatus, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read while waiting: a full pipe must not be what holds the child up.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_bounded(&mut child, &args.join(" "));
    (status, reader.join().unwrap())
}

/// Runs badge with stderr to a file; returns its exit status and stderr.
fn run_to_file(args: &[&str], dir: &Path) -> (ExitStatus, String) {
    let path = dir.join("stderr");
    let file = std::fs::File::create(&path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, &args.join(" "));
    (status, std::fs::read_to_string(&path).unwrap())
}

#[test]
fn usage_errors_print_clap_message_and_exit_2_at_once() {
    let cases: [(&[&str], &str); 5] = [
        (&["nosuch"], "error: unrecognized subcommand 'nosuch'"),
        (
            &["server", "--bogus"],
            "error: unexpected argument '--bogus' found",
        ),
        (&["token", "rewoke"], "error: unrecognized subcommand 'rewoke'"),
        (
            &["token", "revoke"],
            "error: the following required arguments were not provided:",
        ),
        // A boolean flag does not take the next word as its value, as in pflag.
        (
            &["server", "--anonymous-auth", "false"],
            "error: unexpected argument 'false' found",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in cases {
        for run in 0..20 {
            for (sink, (status, stderr)) in [
                ("pipe", run_to_pipe(args)),
                ("file", run_to_file(args, dir.path())),
            ] {
                assert_eq!(
                    status.code(),
                    Some(2),
                    "`badge {}` run {run}, stderr to a {sink}: {stderr}",
                    args.join(" ")
                );
                assert!(
                    stderr.contains(message) && stderr.contains("Usage: badge"),
                    "`badge {}` run {run}, stderr to a {sink}: {stderr}",
                    args.join(" ")
                );
            }
        }
    }
}

#[test]
fn help_prints_and_exits_0_at_once() {
    for run in 0..20 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_badge"))
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        let status = wait_bounded(&mut child, "--help");
        let help = reader.join().unwrap();
        assert_eq!(status.code(), Some(0), "run {run}");
        assert!(help.contains("Usage: badge"), "run {run}: {help}");
        let (status, _) = run_to_file(&["--help"], tempfile::tempdir().unwrap().path());
        assert_eq!(status.code(), Some(0), "run {run}, stderr to a file");
    }
}

/// Runs `badge token inspect -` against `s` with the token on standard input.
fn inspect(s: &TestServer, token: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["token", "inspect", "-", "--kubeconfig"])
        .arg(s.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn token_inspect_exits_non_zero_when_the_token_does_not_verify() {
    let s = crate::server();
    s.kubectl_ok(&["create", "sa", "inspected", "-n", "default"]);
    let token = s.kubectl_ok(&["create", "token", "inspected", "-n", "default"]);

    let valid = inspect(&s, &token);
    let stdout = String::from_utf8_lossy(&valid.stdout);
    assert!(
        valid.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    assert!(stdout.contains("Verifies:    yes"), "{stdout}");

    // The real header and claims under a signature the server never made.
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ");
    let refused = inspect(&s, &forged);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("Verifies:    no"), "{stdout}");
    assert!(
        stderr.contains("error: the server does not accept the token"),
        "{stderr}"
    );
    assert!(!stderr.contains(signed) && !stdout.contains(signed));

    let garbage = inspect(&s, "garbage");
    assert_eq!(garbage.status.code(), Some(1));
}

#[test]
fn the_last_log_lines_are_written_before_the_server_exits() {
    let mut s = crate::server();
    let status = s.stop();
    assert!(status.success(), "badge exited with {status}");
    eventually("the closing log line", || {
        s.log
            .lock()
            .unwrap()
            .last()
            .is_some_and(|line| line.contains("stopped"))
    });
}
