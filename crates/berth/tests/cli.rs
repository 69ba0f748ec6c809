//! Black-box checks of the command line itself.

mod common;

use common::berth;

#[test]
fn version_names_the_release() {
    let out = berth(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("berth {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_commands_and_global_flags_with_defaults() {
    let out = berth(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "completions",
        "--log-format",
        "--server-url",
        "[default: http://127.0.0.1:7070]",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_bad_global_flag_value_is_named_with_the_choices() {
    let out = berth(&["--log-format", "xml", "completions", "bash"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--log-format"), "{text}");
    assert!(text.contains("human or json"), "{text}");
}

#[test]
fn completions_are_generated_for_bash() {
    let out = berth(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_berth()"));
}
