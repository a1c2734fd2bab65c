//! The built binary's configuration: `--config` files, precedence over the environment and
//! flags, `--print-config` and its redaction, and the refusals that stop a node before it starts.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use switchboard_test_support::ScratchDir;
use switchboard_tests::{binary_path, within_for, without_switchboard_env};
use tokio::process::Command;

/// A guard against a node that starts when it should have exited, not a timing check.
const EXIT_GUARD: Duration = Duration::from_secs(60);

/// What one run of the binary printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run the binary in `dir` with exactly these `SWITCHBOARD_*` variables (the test process's
/// own are removed) and wait for it to exit.
async fn switchboard(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(binary_path());
    cmd.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    without_switchboard_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let output = within_for(EXIT_GUARD, "switchboard to exit", cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary_path().display()));
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    path.to_str().expect("a UTF-8 temp path").to_owned()
}

/// The line for `key` in `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{printed}"))
}

/// A refused configuration: a non-zero exit, nothing on stdout (no log line, so nothing
/// started), and the reason on stderr.
fn assert_refused(run: &Run) {
    assert!(
        !run.status.success(),
        "exit {:?}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(run.status.code(), Some(2), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.stdout, "",
        "the node must not start; stderr:\n{}",
        run.stderr
    );
}

#[tokio::test]
async fn flag_beats_env_beats_file_beats_default() {
    let dir = ScratchDir::new();
    let file = write(
        &dir.0,
        "switchboard.toml",
        r#"
        log = "error"
        node-id = "from-file"
        drain_secs = 7
        conformance = true
        workers = 3
        "#,
    );
    let run = switchboard(
        &dir.0,
        &["--print-config", "--log", "debug"],
        &[
            ("SWITCHBOARD_CONFIG", &file),
            ("SWITCHBOARD_LOG", "warn"),
            ("SWITCHBOARD_NODE_ID", "from-env"),
            ("SWITCHBOARD_WORKERS", "2"),
        ],
    )
    .await;
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let printed = &run.stdout;
    assert!(
        printed.contains(&format!("# Config file: {file} (named by env)")),
        "{printed}"
    );
    assert_eq!(line(printed, "log"), "log = \"debug\" # flag");
    assert_eq!(
        line(printed, "node-id"),
        "node-id = \"from-env\" # env SWITCHBOARD_NODE_ID"
    );
    assert_eq!(
        line(printed, "workers"),
        "workers = 2 # env SWITCHBOARD_WORKERS"
    );
    assert_eq!(line(printed, "drain-secs"), "drain-secs = 7 # file");
    assert_eq!(line(printed, "conformance"), "conformance = true # file");
    assert_eq!(
        line(printed, "max-payload"),
        "max-payload = 1000000 # default"
    );
    assert_eq!(
        line(printed, "listen"),
        "listen = \"0.0.0.0:3000\" # default"
    );
    assert!(line(printed, "redis-url").starts_with("# redis-url is unset"));
}

#[tokio::test]
async fn print_config_exits_without_binding() {
    let dir = ScratchDir::new();
    // Held by the test: a node that tried to bind it would fail instead of exiting 0.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("local address").to_string();
    let file = write(&dir.0, "sb.toml", &format!("listen = \"{addr}\"\n"));
    let run = switchboard(&dir.0, &["--config", &file, "--print-config"], &[]).await;
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert_eq!(
        line(&run.stdout, "listen"),
        format!("listen = \"{addr}\" # file")
    );
    assert!(run.stdout.contains("(named by flag)"), "{}", run.stdout);
    assert!(
        !dir.0.join("switchboard.db").exists(),
        "--print-config must not open the database"
    );

    // And what it printed is a file --config accepts, giving the same settings.
    let again = write(&dir.0, "printed.toml", &run.stdout);
    let rerun = run_again(&dir.0, &again).await;
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(" # ").map_or(l, |(v, _)| v).to_owned())
            .collect()
    };
    assert_eq!(values(&run.stdout), values(&rerun));
}

async fn run_again(dir: &Path, file: &str) -> String {
    let run = switchboard(dir, &["--config", file, "--print-config"], &[]).await;
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.stdout
}

#[tokio::test]
async fn secrets_are_redacted_wherever_they_come_from() {
    let dir = ScratchDir::new();
    let file = write(
        &dir.0,
        "sb.toml",
        "jwt-secret = \"file-jwt-secret\"\nredis-url = \"redis://:file-redis-pw@127.0.0.1:6399/0\"\n",
    );
    let run = switchboard(
        &dir.0,
        &[
            "--config",
            &file,
            "--print-config",
            "--database-url",
            "postgres://app:flag-db-pw@127.0.0.1:5432/sb",
        ],
        &[("SWITCHBOARD_API_KEY", "env-api-key")],
    )
    .await;
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    for secret in [
        "file-jwt-secret",
        "file-redis-pw",
        "flag-db-pw",
        "env-api-key",
    ] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} leaked:\n{}{}",
            run.stdout,
            run.stderr
        );
    }
    assert_eq!(
        line(&run.stdout, "jwt-secret"),
        "jwt-secret = \"<redacted>\" # file"
    );
    assert_eq!(
        line(&run.stdout, "api-key"),
        "api-key = \"<redacted>\" # env SWITCHBOARD_API_KEY"
    );
    assert_eq!(
        line(&run.stdout, "redis-url"),
        "redis-url = \"redis://:<redacted>@127.0.0.1:6399/0\" # file"
    );
    assert_eq!(
        line(&run.stdout, "database-url"),
        "database-url = \"postgres://app:<redacted>@127.0.0.1:5432/sb\" # flag"
    );

    // The printed file still says <redacted>: refused while nothing overrides it.
    let printed = write(&dir.0, "printed.toml", &run.stdout);
    let refused = switchboard(&dir.0, &["--config", &printed], &[]).await;
    assert_refused(&refused);
    assert!(
        refused
            .stderr
            .contains("--jwt-secret or SWITCHBOARD_JWT_SECRET"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn an_unknown_key_is_refused_naming_it_and_the_file() {
    let dir = ScratchDir::new();
    let file = write(&dir.0, "sb.toml", "listne = \"127.0.0.1:0\"\n");
    let run = switchboard(&dir.0, &["--config", &file], &[]).await;
    assert_refused(&run);
    assert!(run.stderr.contains(&file), "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown key `listne`"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_bad_value_is_refused_naming_the_key() {
    let dir = ScratchDir::new();
    let file = write(
        &dir.0,
        "sb.toml",
        "listen = \"127.0.0.1:0\"\nping-interval-ms = \"soon\"\n",
    );
    // Even though a variable would override the bad value, the file is wrong and says so.
    let run = switchboard(
        &dir.0,
        &["--config", &file],
        &[("SWITCHBOARD_PING_INTERVAL_MS", "100")],
    )
    .await;
    assert_refused(&run);
    assert!(run.stderr.contains(&file), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "`ping-interval-ms` = \"soon\": invalid value: invalid digit found in string"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_missing_file_is_refused() {
    let dir = ScratchDir::new();
    let missing = dir.0.join("nowhere.toml");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    let run = switchboard(
        &dir.0,
        &["--listen", "127.0.0.1:0"],
        &[("SWITCHBOARD_CONFIG", missing)],
    )
    .await;
    assert_refused(&run);
    assert!(
        run.stderr
            .contains(&format!("cannot read config file {missing}: No such file")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_node_starts_from_a_file() {
    let dir = ScratchDir::new();
    let file = write(
        &dir.0,
        "sb.toml",
        "listen = \"127.0.0.1:0\"\nnode-id = \"node-from-file\"\ndrain_secs = 1\n",
    );
    // Node::start adds `--listen 127.0.0.1:0` itself; the rest comes from the file.
    let node = switchboard_tests::Node::start(&["--config", &file]).await;
    let health = switchboard_tests::http_get(node.addr(), "/health")
        .await
        .json();
    assert_eq!(health["node"], "node-from-file", "{health}");
    node.assert_no_panic();
}
