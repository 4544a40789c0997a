//! The documentation's snippets stay true: every command and flag of the CLI
//! table in docs/cli.md exists in the binary, and every script a shell snippet
//! of docs/ runs is there and executable.

use strata_tests::*;

fn doc(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("docs").join(name)).expect("read doc")
}

#[test]
fn the_cli_table_matches_the_binary() {
    if !is_strata() {
        return skip("the_cli_table_matches_the_binary", "documents strata's command line");
    }
    let text = doc("cli.md");
    let mut rows = 0;
    for line in text.lines().filter(|l| l.starts_with("| `strata ")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        // Each `strata CMD [...]` in the cell (pause / resume share a row).
        for usage in cell.split("`strata ").skip(1) {
            let usage = usage.split('`').next().unwrap_or_default();
            let cmd = usage.split_whitespace().next().unwrap_or_default();
            let mut c = std::process::Command::new(runtime_bin());
            let help = run_to_files(c.args([cmd, "--help"]));
            assert_eq!(help.code, 0, "docs/cli.md: strata {cmd}: {help:?}");
            for flag in usage.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-')) {
                if flag.starts_with("--") && flag.len() > 2 {
                    assert!(help.stdout.contains(flag), "docs/cli.md: strata {cmd} has no {flag}");
                }
            }
            rows += 1;
        }
    }
    assert!(rows >= 15, "the command table has {rows} commands");
}

#[test]
fn scripts_in_the_docs_exist() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_root().join("docs")).expect("docs") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let mut in_sh = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            for word in line.split_whitespace() {
                if (word.starts_with("hack/") || word.starts_with("tests/")) && word.ends_with(".sh") {
                    let script = repo_root().join(word);
                    let mode =
                        std::fs::metadata(&script).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
                    assert!(
                        mode.is_ok_and(|m| m & 0o111 != 0),
                        "{}: {word} is not an executable script",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 0, "no script found in the docs' shell snippets");
}
