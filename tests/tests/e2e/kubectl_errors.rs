//! kubectl error paths: malformed YAML, strict field validation, invalid names, NotFound.

use anyhow::{Result, ensure};
use skiff_tests::{Skiff, StoreKind, both_stores};

const MALFORMED: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\n  data: [\n";

const POD_WITH_UNKNOWN_FIELD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: strict
spec:
  containers:
  - name: main
    image: registry.example/app:1
    bogusField: 1
"#;

async fn kubectl_errors(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;

    let err = skiff.kubectl_stdin(&["apply", "-f", "-"], Some(MALFORMED)).await?.err()?;
    ensure!(err.to_lowercase().contains("error"), "{err}");

    let err =
        skiff.kubectl_stdin(&["create", "--validate=strict", "-f", "-"], Some(POD_WITH_UNKNOWN_FIELD)).await?.err()?;
    ensure!(err.contains("bogusField"), "error does not name the field: {err}");
    let absent = skiff.kubectl(&["get", "pod", "strict"]).await?.err()?;
    ensure!(absent.contains("NotFound"), "{absent}");

    let err = skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\ndata:\n  a: b\n"),
        )
        .await?
        .err()?;
    ensure!(err.contains("Invalid"), "{err}");

    skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: here\ndata:\n  a: b\n"),
        )
        .await?
        .ok()?;
    let err = skiff.kubectl(&["get", "cm", "here", "-n", "kube-system"]).await?.err()?;
    ensure!(err.contains("NotFound"), "{err}");
    let err = skiff.kubectl(&["get", "cm", "here", "-n", "no-such-ns"]).await?.err()?;
    ensure!(err.contains("NotFound"), "{err}");
    Ok(())
}

both_stores!(kubectl_errors);
