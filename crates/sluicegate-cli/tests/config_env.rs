//! End-to-end: what `sluicegate config check` says about the environment: unknown `KAFKA_*`
//! and `SLUICEGATE_*` variables listed as warnings with the closest known name, other programs'
//! variables left alone, and the GSSAPI mechanism refused.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{last_json_line, run_with_env};

const LIMIT: Duration = Duration::from_secs(60);

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/sluicegate.yaml")
        .display()
        .to_string()
}

const ENV: [(&str, &str); 4] = [
    ("KAFKA_GRUOP_ID", "billing"),
    ("SLUICEGATE_MAX_IN_FLIGHT", "10"),
    ("KAFKA_HEAP_OPTS", "-Xmx1g"),
    ("RUST_LOG", "warn"),
];

#[test]
fn config_check_lists_unknown_variables_as_warnings_and_still_passes() {
    let (ok, out, err) = run_with_env(&["config", "check", &example()], &ENV, LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("valid (environment applied)"), "{out}");
    for line in [
        "warning: KAFKA_GRUOP_ID: unknown variable, ignored; did you mean `KAFKA_GROUP_ID`?",
        "warning: SLUICEGATE_MAX_IN_FLIGHT: unknown variable, ignored; did you mean \
         `KAFKA_MAX_IN_FLIGHT`?",
    ] {
        assert!(
            err.lines().any(|l| l == line),
            "missing `{line}` in:\n{err}"
        );
    }
    assert!(!err.contains("KAFKA_HEAP_OPTS"), "{err}");
    // The misspelled variable changed nothing.
    assert!(
        out.contains("group_id: \"orders-billing\"  # file, line"),
        "{out}"
    );

    let (ok, out, err) = run_with_env(&["config", "check", "--json", &example()], &ENV, LIMIT);
    assert!(ok, "{err}");
    let v = last_json_line(&out, &err);
    assert_eq!(v["ok"], true, "{v}");
    let warning = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["path"] == "KAFKA_GRUOP_ID")
        .unwrap_or_else(|| panic!("no warning about KAFKA_GRUOP_ID in {v}"));
    assert_eq!(warning["source"], "env", "{warning}");
    assert_eq!(warning["env"], "KAFKA_GRUOP_ID", "{warning}");
    assert_eq!(warning["value"], "", "values are never shown: {warning}");
    assert!(
        warning["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did you mean `KAFKA_GROUP_ID`?")),
        "{warning}"
    );

    // --no-env: the environment is not read, so nothing is said about it.
    let (ok, _, err) = run_with_env(&["config", "check", "--no-env", &example()], &ENV, LIMIT);
    assert!(ok, "{err}");
    assert!(!err.contains("unknown variable"), "{err}");
}

#[test]
fn gssapi_is_refused_with_the_reason() {
    let (ok, _, err) = run_with_env(
        &["config", "check", &example()],
        &[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "GSSAPI"),
        ],
        LIMIT,
    );
    assert!(!ok);
    assert!(
        err.contains(
            "error: kafka.security.sasl_mechanism = `GSSAPI` (from KAFKA_SASL_MECHANISM): GSSAPI \
             (Kerberos) is not supported: Sluicegate is built without Kerberos"
        ),
        "{err}"
    );
}
