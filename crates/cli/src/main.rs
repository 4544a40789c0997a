//! `strata`: a runc-compatible command line over the Strata runtime library.
//! One file per command under `commands/`; this file parses flags, sets up logging
//! and turns errors into one line and runc's exit codes.

mod commands;
mod foreground;
mod logging;
mod vm;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The command line.
#[derive(Parser, Debug)]
#[command(name = "strata", about = "Run OCI containers", disable_version_flag = true)]
pub struct Cli {
    #[command(flatten)]
    globals: Globals,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Global flags, as runc spells them.
#[derive(clap::Args, Debug)]
struct Globals {
    /// Directory holding container state (default: /run/strata; rootless,
    /// $XDG_RUNTIME_DIR/strata or /run/user/UID/strata).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Write log messages to this file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log debug messages too.
    #[arg(long, global = true)]
    debug: bool,
    /// Cgroup manager: cgroupfs (default), systemd (as --systemd-cgroup), or
    /// disabled (no cgroup: no limits, no device allowlist; for measurements and
    /// callers that manage cgroups).
    #[arg(long = "cgroup-manager", global = true, default_value = "cgroupfs", value_parser = ["cgroupfs", "systemd", "disabled"])]
    cgroup_manager: String,
    /// Let systemd own the container's cgroup: a transient scope unit named by
    /// linux.cgroupsPath ("slice:prefix:name").
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
}

/// Parses the command line. clap builds the definition of every subcommand
/// before it parses one (about 250 µs, a twentieth of a container's `run`):
/// the lifecycle commands a container manager calls for every container are
/// parsed with the global flags and their own definition alone. Anything
/// else (another command, help, an unknown flag, an error) goes through the
/// whole definition, so what is accepted and every message stay the same.
fn parse() -> Cli {
    parse_lifecycle(std::env::args_os().collect()).unwrap_or_else(Cli::parse)
}

fn parse_lifecycle(args: Vec<std::ffi::OsString>) -> Option<Cli> {
    use clap::{Args, FromArgMatches};
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return None;
    }
    const LIFECYCLE: [&str; 7] = ["create", "start", "state", "kill", "delete", "run", "exec"];
    let given = lifecycle_command(&args)?;
    let name = *LIFECYCLE.iter().find(|n| **n == given)?;
    let sub = clap::Command::new(name);
    let sub = match name {
        "create" => commands::create::CreateArgs::augment_args(sub),
        "start" => commands::start::Args::augment_args(sub),
        "state" => commands::state::Args::augment_args(sub),
        "kill" => commands::kill::Args::augment_args(sub),
        "delete" => commands::delete::Args::augment_args(sub),
        "run" => commands::run::Args::augment_args(sub),
        "exec" => commands::exec::Args::augment_args(sub),
        _ => return None,
    };
    let cmd = Globals::augment_args(clap::Command::new("strata")).subcommand(sub);
    let matches = cmd.try_get_matches_from(args).ok()?;
    let globals = Globals::from_arg_matches(&matches).ok()?;
    let (_, m) = matches.subcommand()?;
    let command = match name {
        "create" => Command::Create(FromArgMatches::from_arg_matches(m).ok()?),
        "start" => Command::Start(FromArgMatches::from_arg_matches(m).ok()?),
        "state" => Command::State(FromArgMatches::from_arg_matches(m).ok()?),
        "kill" => Command::Kill(FromArgMatches::from_arg_matches(m).ok()?),
        "delete" => Command::Delete(FromArgMatches::from_arg_matches(m).ok()?),
        "run" => Command::Run(FromArgMatches::from_arg_matches(m).ok()?),
        "exec" => Command::Exec(FromArgMatches::from_arg_matches(m).ok()?),
        _ => return None,
    };
    Some(Cli { globals, version: false, command: Some(command) })
}

/// The subcommand's name, when only global flags come before it.
fn lifecycle_command(args: &[std::ffi::OsString]) -> Option<&str> {
    const WITH_VALUE: [&str; 4] = ["--root", "--log", "--log-format", "--cgroup-manager"];
    const WITHOUT: [&str; 2] = ["--debug", "--systemd-cgroup"];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if WITH_VALUE.contains(&a) {
            it.next()?;
        } else if WITHOUT.contains(&a)
            || WITH_VALUE.iter().any(|f| a.strip_prefix(f).is_some_and(|v| v.starts_with('=')))
        {
        } else if a.starts_with('-') {
            return None;
        } else {
            return Some(a);
        }
    }
    None
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container from a bundle (it waits for `start`).
    Create(commands::create::CreateArgs),
    /// Start a created container.
    Start(commands::start::Args),
    /// Print a container's state as JSON.
    State(commands::state::Args),
    /// Send a signal to a container.
    Kill(commands::kill::Args),
    /// Delete a container.
    Delete(commands::delete::Args),
    /// Create and start a container, then wait for it (unless --detach).
    Run(commands::run::Args),
    /// Run a new process in a running container.
    Exec(commands::exec::Args),
    /// List containers.
    #[command(alias = "ls")]
    List(commands::list::Args),
    /// Write a default config.json.
    Spec(commands::spec::Args),
    /// Freeze every process of a container.
    Pause(commands::pause::Args),
    /// Thaw a paused container.
    Resume(commands::pause::Args),
    /// List a container's processes.
    Ps(commands::ps::Args),
    /// Change a running container's resource limits.
    Update(commands::update::Args),
    /// Print a container's statistics as JSON events.
    Events(commands::events::Args),
    /// Print what this build supports on this host (OCI features JSON).
    Features,
}

/// `println!` for command output: a closed stdout (`strata list | head -1`) ends
/// the process the Unix way, by SIGPIPE, instead of a panic.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::stdout_line(&format!($($t)*)) };
}

/// Writes one line to stdout (see [`outln`]).
pub fn stdout_line(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // SAFETY: restoring the default disposition and raising the signal to
            // ourselves has no memory-safety preconditions.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
            Err(e.into())
        }
        r => Ok(r?),
    }
}

/// The `--version` text, in runc's lines (`commit:`, `spec:`, `libseccomp:`).
fn version() -> String {
    let seccomp = libseccomp_version();
    format!(
        "strata version {}\ncommit: {}\nspec: {}\nlibseccomp: {seccomp}",
        env!("CARGO_PKG_VERSION"),
        env!("STRATA_COMMIT"),
        strata_runtime::OCI_VERSION
    )
}

fn libseccomp_version() -> String {
    strata_runtime::features::libseccomp_version().unwrap_or_else(|| "unknown".into())
}

fn main() {
    if vm::is_agent() {
        vm::agent_main();
    }
    let mut cli = parse();
    let no_cgroup = cli.globals.cgroup_manager == "disabled";
    let systemd = cli.globals.systemd_cgroup || cli.globals.cgroup_manager == "systemd";
    if no_cgroup && cli.globals.systemd_cgroup {
        eprintln!("strata: --systemd-cgroup and --cgroup-manager disabled contradict each other");
        std::process::exit(1);
    }
    let as_vm = vm::invoked_as_vm();
    match &mut cli.command {
        Some(Command::Create(a)) => (a.no_cgroup, a.systemd_cgroup, a.vm) = (no_cgroup, systemd, a.vm || as_vm),
        Some(Command::Run(a)) => {
            (a.create.no_cgroup, a.create.systemd_cgroup, a.create.vm) = (no_cgroup, systemd, a.create.vm || as_vm)
        }
        _ => {}
    }
    if cli.version {
        println!("{}", version());
        return;
    }
    // Preserved descriptors are checked before this process opens anything (the log
    // file, a console socket) that could take one of their numbers.
    let preserve = match &cli.command {
        Some(Command::Create(a)) => a.preserve_fds,
        Some(Command::Run(a)) => a.create.preserve_fds,
        Some(Command::Exec(a)) => a.preserve_fds,
        _ => 0,
    };
    if let Err(e) = strata_runtime::container::check_preserved_fds(preserve) {
        eprintln!("strata: {e}");
        std::process::exit(if matches!(cli.command, Some(Command::Exec(_))) { 255 } else { 1 });
    }
    let log = match logging::Logger::new(cli.globals.log.as_deref(), &cli.globals.log_format, cli.globals.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("strata: {e:#}");
            std::process::exit(if matches!(cli.command, Some(Command::Exec(_))) { 255 } else { 1 });
        }
    };
    let Some(command) = cli.command else {
        eprintln!("strata: no command given; see strata --help");
        std::process::exit(1);
    };
    let is_exec = matches!(command, Command::Exec(_));
    let result = match cli.globals.root.clone().map(Ok).unwrap_or_else(strata_runtime::state::default_root) {
        Ok(root) => {
            log.debug(&format!("{command:?} (root {})", root.display()));
            run(command, &root, &log)
        }
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(code) => {
            log.debug(&format!("done, exit code {code}"));
            std::process::exit(code)
        }
        Err(e) => {
            log.error(&format!("{e:#}"));
            // runc's convention: exec reports runtime failures as 255 so they cannot be
            // confused with the process's own exit code.
            std::process::exit(if is_exec { 255 } else { 1 });
        }
    }
}

fn run(command: Command, root: &std::path::Path, log: &logging::Logger) -> anyhow::Result<i32> {
    match command {
        Command::Create(a) => commands::create::run(a, root, log),
        Command::Start(a) => commands::start::run(a, root, log),
        Command::State(a) => commands::state::run(a, root),
        Command::Kill(a) => commands::kill::run(a, root),
        Command::Delete(a) => commands::delete::run(a, root, log),
        Command::Run(a) => commands::run::run(a, root, log),
        Command::Exec(a) => commands::exec::run(a, root),
        Command::List(a) => commands::list::run(a, root),
        Command::Spec(a) => commands::spec::run(a),
        Command::Pause(a) => commands::pause::pause(a, root),
        Command::Resume(a) => commands::pause::resume(a, root),
        Command::Ps(a) => commands::ps::run(a, root),
        Command::Update(a) => commands::update::run(a, root),
        Command::Events(a) => commands::events::run(a, root),
        Command::Features => commands::features::run(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lifecycle commands' own parser gives what the whole definition
    /// gives, and leaves to it everything else.
    #[test]
    fn lifecycle_commands_parse_as_with_the_whole_definition() {
        let same = [
            "strata run --bundle /b c1",
            "strata --root /r run -d --bundle /b --pid-file /p c1",
            "strata --root=/r --log /l --log-format json run --bundle=/b c1",
            "strata run --bundle /b c1 --root /late --debug",
            "strata --cgroup-manager disabled --systemd-cgroup create -b /b --console-socket /s --preserve-fds 2 c2",
            "strata start c1",
            "strata --root /r state c1",
            "strata kill c1",
            "strata kill --all c1 TERM",
            "strata kill c1 9",
            "strata delete --force c1",
            "strata exec c1 ls -la /",
            "strata exec -t --env A=1 -u 1000:1000 --cwd /tmp c1 sh -c 'echo -v'",
            "strata exec --process /p.json -d c1",
            "strata --debug exec c1 -- ls --color",
        ];
        for line in same {
            let argv: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            let fast = parse_lifecycle(argv.clone()).unwrap_or_else(|| panic!("{line}: not parsed fast"));
            let whole = Cli::try_parse_from(argv).expect(line);
            assert_eq!(format!("{fast:?}"), format!("{whole:?}"), "{line}");
        }
        let whole_only = [
            "strata list",
            "strata spec",
            "strata -v",
            "strata --version run c1",
            "strata run --help",
            "strata exec c1 ls --help",
            "strata --unknown run c1",
            "strata run",
            "strata kill",
            "strata --root",
        ];
        for line in whole_only {
            let argv: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            assert!(parse_lifecycle(argv).is_none(), "{line}: parsed fast");
        }
    }
}
