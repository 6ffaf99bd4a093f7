//! A `scale` run that cannot fit the process's descriptor limit says so, with the
//! limit and what to set, before it opens anything.

mod bench;

use std::time::Duration;

use bench::run_shell;

#[test]
fn scale_names_the_descriptor_limit_it_cannot_fit() {
    let ran = run_shell(
        r#"ulimit -n 256 && exec "$BENCH" --quiet scale --conns 1000"#,
        Duration::from_secs(120),
    );
    assert_eq!(ran.status.code(), Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("the limit is 256") && ran.stderr.contains("ulimit -n"),
        "{}",
        ran.stderr
    );
}
