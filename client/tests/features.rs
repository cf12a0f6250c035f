//! The crate's features: a library user who turns off the default `cli` feature does not
//! pull in the CLI's dependencies.

use std::process::Command;

fn normal_deps(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["tree", "--offline", "-p", "rmq-client", "-e", "normal", "--prefix", "none"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_library_without_default_features_has_no_cli_dependencies() {
    let lib = normal_deps(&["--no-default-features"]);
    for heavy in ["clap ", "indicatif ", "tracing-subscriber ", "serde_json "] {
        assert!(!lib.contains(heavy), "{heavy}is a dependency of the library alone");
    }
    let cli = normal_deps(&[]);
    assert!(cli.contains("clap ") && cli.contains("indicatif "), "{cli}");
}
