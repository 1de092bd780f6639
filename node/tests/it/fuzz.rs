//! The API fuzzer: schemathesis (installed by scripts/setup.sh) over the OpenAPI
//! document the cluster serves, with every check it has. A finding fails the test
//! with schemathesis's own report (and the `curl` line that reproduces it).

use super::cluster;

/// Where scripts/setup.sh installs schemathesis's `st`, unless `KEEL_SCHEMATHESIS` says.
fn schemathesis() -> String {
    std::env::var("KEEL_SCHEMATHESIS").unwrap_or_else(|_| "/var/tmp/keel-venv/bin/st".into())
}

/// No 5xx, no schema-valid request refused, no schema-invalid one accepted, every
/// response (errors included, as problem JSON) as documented. Cluster membership is
/// left out: a fuzzed add or remove of a voter would take the cluster under test
/// apart (its routes and validation have their own tests in membership.rs and
/// api_surface.rs). Without data hosts, accepted creates fail at placement, so the
/// run exercises the API and the state machine, not PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_fuzzer_finds_nothing() {
    let c = cluster(&[]).await;
    let st = schemathesis();
    assert!(
        std::path::Path::new(&st).exists(),
        "schemathesis is not installed at {st}: run scripts/setup.sh"
    );
    // A fixed seed keeps CI reproducible; explore with KEEL_FUZZ_SEED / KEEL_FUZZ_EXAMPLES.
    let seed = std::env::var("KEEL_FUZZ_SEED").unwrap_or_else(|_| "20261130".into());
    let examples = std::env::var("KEEL_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    // schemathesis keeps a cache in its working directory; not in the checkout.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let out = tokio::process::Command::new(&st)
        .current_dir(scratch.path())
        .args([
            "run",
            &format!("{}/v1/openapi.json", c.url(1)),
            "--checks",
            "all",
            // An admin may create a resource in another account, which a bare name in a
            // path then does not reach (`<name>.<account>` does, by design): the check's
            // inferred link from a create's `name` to `{name}` cannot say so.
            "--exclude-checks",
            "ensure_resource_availability",
            // Membership changes would break the cluster under test, and revoking tokens
            // could revoke the fuzzer's own; both have their own tests.
            "--exclude-path-regex",
            "^/v1/cluster/nodes|^/v1/tokens/",
            "--header",
            &format!("Authorization: Bearer {}", c.token()),
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .output()
        .await
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed"), "schemathesis tested something:\n{report}");
}
