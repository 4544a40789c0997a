//! `strata-fn`: deploy functions and run each event in a container of its own.

use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use strata_fn::function::Function;
use strata_fn::http;
use strata_fn::server::{Config, Server};
use strata_fn::store::{self, Status, DEFAULT_STATE};

#[derive(Parser)]
#[command(name = "strata-fn", about = "Run functions: a fresh container per event", disable_version_flag = true)]
struct Cli {
    /// State directory: registered functions, the invocation log, containers.
    #[arg(long, global = true, default_value = DEFAULT_STATE)]
    state: PathBuf,
    /// Cluster mode: the function registry is shared through this NATS
    /// server's JetStream (nats://HOST:PORT).
    #[arg(long, global = true)]
    nats: Option<String>,
    /// NATS user and password: a file whose first line is USER:PASSWORD.
    #[arg(long, global = true)]
    nats_password_file: Option<PathBuf>,
    /// NATS nkey authentication: a file holding the seed.
    #[arg(long, global = true)]
    nats_nkey_file: Option<PathBuf>,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, global = true)]
    nats_creds: Option<PathBuf>,
    /// TLS to NATS: the CA (PEM) that signed the server's certificate.
    #[arg(long, global = true)]
    nats_ca: Option<PathBuf>,
    /// TLS client authentication to NATS: certificate and key (PEM).
    #[arg(long, global = true, num_args = 2, value_names = ["CERT", "KEY"])]
    nats_cert: Option<Vec<PathBuf>>,
    /// How long a node may hold a cluster event without a word (tests).
    #[arg(long, global = true, hide = true)]
    nats_ack_wait_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The NATS connection settings, where cluster mode is on.
    fn nats(&self) -> anyhow::Result<Option<strata_fn::cluster::Nats>> {
        let Some(url) = &self.nats else {
            let given = self.nats_password_file.is_some()
                || self.nats_nkey_file.is_some()
                || self.nats_creds.is_some()
                || self.nats_ca.is_some()
                || self.nats_cert.is_some();
            if given {
                anyhow::bail!("the --nats-* options need --nats URL");
            }
            return Ok(None);
        };
        let cert = self.nats_cert.as_ref().map(|v| (v[0].clone(), v[1].clone()));
        Ok(Some(strata_fn::cluster::Nats {
            url: url.clone(),
            password_file: self.nats_password_file.clone(),
            nkey_file: self.nats_nkey_file.clone(),
            creds_file: self.nats_creds.clone(),
            ca: self.nats_ca.clone(),
            cert,
            ack_wait: self.nats_ack_wait_ms.map(std::time::Duration::from_millis),
        }))
    }
}

/// `strata-fn token ...`.
#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Make a token and print it (once: only its hash is kept).
    Create {
        /// A name to tell it by.
        #[arg(long)]
        name: String,
        /// invoke, invoke:NAME[,NAME...], read, metrics or admin (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (ids, names, scopes; never secrets).
    Ls,
    /// Revoke a token by id: it is refused from the next request on.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (invoke, invocations, functions, metrics).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Billing granularity in milliseconds (durations round up to it).
        #[arg(long, default_value_t = 1)]
        bill_ms: u64,
        /// Invocations running at once over all functions.
        #[arg(long, default_value_t = 64)]
        max_running: u32,
        /// Synchronous calls waiting for the global limit before 429.
        #[arg(long, default_value_t = 1024)]
        max_waiting: u32,
        /// Threads running asynchronous and file events.
        #[arg(long, default_value_t = 4)]
        async_workers: usize,
        /// Threads creating warm containers.
        #[arg(long, default_value_t = 2)]
        pool_workers: usize,
        /// On SIGTERM, how long running invocations get to finish.
        #[arg(long, default_value_t = 30)]
        drain_s: u64,
        /// Where invocations' cgroups go: a directory under the cgroup v2
        /// mount (default strata-fn), or with the systemd driver a slice
        /// (default strata_fn.slice).
        #[arg(long)]
        cgroup_parent: Option<String>,
        /// Cgroup driver: systemd (each invocation a scope unit), cgroupfs, or
        /// auto: systemd when the host was booted with it.
        #[arg(long, default_value = "auto", value_parser = ["auto", "cgroupfs", "systemd"])]
        cgroup_driver: String,
        /// The systemd cgroup driver (as `--cgroup-driver systemd`).
        #[arg(long)]
        systemd_cgroup: bool,
        /// Processes creating containers (0: the server itself; see zygote.rs).
        #[arg(long, hide = true)]
        zygotes: Option<usize>,
        /// Make a new network namespace for every invocation instead of
        /// reusing one that provably holds nothing of the invocation before.
        #[arg(long)]
        fresh_network_namespaces: bool,
        /// Seconds a reusable network namespace is kept unused (tests).
        #[arg(long, hide = true, default_value_t = 30)]
        netns_keep_s: u64,
        /// Benchmark baseline: run each invocation with `RUNTIME run` instead.
        #[arg(long, hide = true)]
        naive_runtime: Option<PathBuf>,
        /// Accept a non-loopback --listen without TLS (tokens then cross the
        /// network in the clear).
        #[arg(long)]
        insecure_http: bool,
        /// Serve HTTPS with this certificate chain (PEM); reread on SIGHUP.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM); reread on SIGHUP.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Mutual TLS: clients must present a certificate this CA (PEM) signed.
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
    /// Bearer tokens for the HTTP API: once one exists, every call but
    /// /healthz needs one, with a scope that allows it.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Validate DIR/function.toml and register the function.
    Deploy { dir: PathBuf },
    /// List registered functions.
    Ls,
    /// Unregister a function.
    Rm { name: String },
    /// Recent invocations of a function, with the end of their stderr.
    Logs {
        name: String,
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
    },
    /// Invoke a function through the server.
    Invoke {
        name: String,
        /// The event: TEXT, @FILE, or - for stdin (default: empty).
        #[arg(long)]
        data: Option<String>,
        /// Queue the event and print its id.
        #[arg(long = "async")]
        asynchronous: bool,
        /// The server: HOST:PORT, http://HOST:PORT or https://HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:8080")]
        server: String,
        /// For https: the CA (PEM) that signed the server's certificate.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// For mutual TLS: this client's certificate (PEM).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// For mutual TLS: this client's private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// The bearer token, where the server requires one (default:
        /// $STRATA_FN_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
    /// Metered usage summed per function and period.
    Usage {
        name: Option<String>,
        /// Period: hour, day or month (UTC).
        #[arg(long, default_value = "day")]
        by: String,
    },
    /// A replacement zygote (see zygote.rs), started by the server.
    #[command(name = "__zygote", hide = true)]
    Zygote,
    /// Load generator for benchmarks: N requests, C at a time; prints JSON.
    #[command(hide = true)]
    Load {
        url: String,
        #[arg(short = 'n', default_value_t = 10_000)]
        n: usize,
        #[arg(short = 'c', default_value_t = 8)]
        c: usize,
        #[arg(long, default_value = "hello")]
        data: String,
        /// The status a request must get to count as done (202 for
        /// asynchronous accepts; then the body is not compared).
        #[arg(long, default_value_t = 200)]
        expect: u16,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata-fn: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let nats = cli.nats()?;
    let state = cli.state;
    match cli.command {
        Command::Serve {
            listen,
            bill_ms,
            max_running,
            max_waiting,
            async_workers,
            pool_workers,
            cgroup_parent,
            cgroup_driver,
            systemd_cgroup,
            zygotes,
            naive_runtime,
            fresh_network_namespaces,
            netns_keep_s,
            drain_s,
            insecure_http,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            strata_fn::auth::check_listen(&listen, &state, tls_cert.is_some(), insecure_http)?;
            // Read before anything starts: a bad file is one line at start.
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    Some(std::sync::Arc::new(strata_fn::tls::Server::load(strata_fn::tls::Files {
                        cert,
                        key,
                        client_ca: tls_client_ca,
                    })?))
                }
                _ => None,
            };
            let systemd_cgroup = systemd_cgroup
                || match cgroup_driver.as_str() {
                    "systemd" => true,
                    // sd_booted(3)'s test: systemd was the init at boot.
                    "auto" => std::path::Path::new("/run/systemd/system").is_dir(),
                    _ => false,
                };
            let cgroup_parent = cgroup_parent
                .unwrap_or_else(|| if systemd_cgroup { "strata_fn.slice" } else { "strata-fn" }.to_string());
            if bill_ms == 0 || max_running == 0 || async_workers == 0 {
                anyhow::bail!("--bill-ms, --max-running and --async-workers must be at least 1");
            }
            // SIGTERM, SIGINT and SIGHUP are taken by a thread of ours (blocked
            // here, before any thread exists; containers start with a clean mask).
            let mut sigs = nix::sys::signal::SigSet::empty();
            sigs.add(nix::sys::signal::Signal::SIGTERM);
            sigs.add(nix::sys::signal::Signal::SIGINT);
            sigs.add(nix::sys::signal::Signal::SIGHUP);
            sigs.thread_block()?;
            // Forked now, while this process has one thread (see zygote.rs):
            // one per pool worker, one more for cold starts.
            let zygotes = match zygotes.unwrap_or(pool_workers + 1) {
                0 => None,
                n => Some(strata_fn::zygote::Zygotes::spawn(n)?),
            };
            // Connections, pipes and warm containers all take descriptors.
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
            let listener =
                std::net::TcpListener::bind(&listen).map_err(|e| anyhow::anyhow!("listen on {listen}: {e}"))?;
            let cfg = Config {
                listen: listen.clone(),
                state,
                bill_ms,
                max_running,
                max_waiting,
                async_workers,
                pool_workers,
                // Connections cost no thread: as many as descriptors allow,
                // less those that containers and the state need.
                max_connections: getrlimit(Resource::RLIMIT_NOFILE)
                    .map(|(soft, _)| soft.saturating_sub(1024).clamp(64, 1 << 20) as usize)
                    .unwrap_or(1024),
                naive_runtime,
                cgroup_parent,
                systemd_cgroup,
                fresh_network_namespaces,
                netns_keep: std::time::Duration::from_secs(netns_keep_s.max(1)),
            };
            let server = Server::start(cfg, zygotes)?;
            let s = server.clone();
            let t = tls.clone();
            std::thread::spawn(move || {
                loop {
                    match sigs.wait() {
                        Ok(nix::sys::signal::Signal::SIGHUP) => match &t {
                            // New connections get the new certificate; open ones keep theirs.
                            Some(t) => match t.reload() {
                                Ok(()) => eprintln!("strata-fn: SIGHUP: TLS certificate and key reloaded"),
                                Err(e) => eprintln!("strata-fn: SIGHUP: kept the old TLS configuration: {e}"),
                            },
                            None => eprintln!("strata-fn: SIGHUP: no TLS to reload"),
                        },
                        Ok(sig) => {
                            eprintln!("strata-fn: {sig}: letting running invocations finish (up to {drain_s} s)");
                            break;
                        }
                        Err(_) => break,
                    }
                }
                s.drain(std::time::Duration::from_secs(drain_s));
                eprintln!("strata-fn: deleting containers and exiting");
                s.shutdown();
                std::process::exit(0);
            });
            let scheme = if tls.is_some() { "https" } else { "http" };
            eprintln!("strata-fn: serving on {scheme}://{}", listener.local_addr()?);
            server.serve(listener, tls, nats)?;
            Ok(0)
        }
        Command::Deploy { dir } => {
            let f = Function::load(&dir)?;
            match &nats {
                // Every node serving the cluster registers it (where its rootfs is).
                Some(n) => strata_fn::cluster::deploy(n, &f)?,
                None => store::register(&state, &f)?,
            }
            println!("deployed {} ({} in {})", f.name, f.command.join(" "), f.rootfs.display());
            Ok(0)
        }
        Command::Ls => {
            let list = match &nats {
                Some(n) => strata_fn::cluster::functions(n)?,
                None => store::functions(&state)?,
            };
            println!("{:<20} {:<8} {:<6} {:<9} {:<24} COMMAND", "NAME", "TIMEOUT", "CONC", "WARM", "TRIGGER");
            for f in list {
                println!(
                    "{:<20} {:<8} {:<6} {:<9} {:<24} {}",
                    f.name,
                    format!("{}ms", f.timeout_ms),
                    f.max_concurrency,
                    format!("{}-{}", f.pool.min_warm, f.pool.max_warm),
                    f.trigger.as_ref().map(|t| t.directory.display().to_string()).unwrap_or_else(|| "-".into()),
                    f.command.join(" ")
                );
            }
            Ok(0)
        }
        Command::Rm { name } => {
            let removed = match &nats {
                Some(n) => strata_fn::cluster::remove(n, &name)?,
                None => store::unregister(&state, &name)?,
            };
            if !removed {
                anyhow::bail!("no function {name:?}");
            }
            println!("removed {name}");
            Ok(0)
        }
        Command::Logs { name, n } => {
            let records: Vec<_> = store::read_log(&state)?.into_iter().filter(|r| r.function == name).collect();
            if records.is_empty() && !store::functions(&state)?.iter().any(|f| f.name == name) {
                anyhow::bail!("no function {name:?}");
            }
            for r in records.iter().rev().take(n).rev() {
                println!(
                    "{} {} {} {} exit={} {:.2}ms{}",
                    timestamp(r.accepted_ms),
                    r.id,
                    r.mode.map(|m| format!("{m:?}").to_lowercase()).unwrap_or_default(),
                    r.status.map(|s| format!("{s:?}").to_lowercase()).unwrap_or_default(),
                    r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    r.duration_ms,
                    r.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default()
                );
                for l in r.stderr_tail.lines() {
                    println!("    {l}");
                }
            }
            Ok(0)
        }
        Command::Invoke { name, data, asynchronous, server, cacert, cert, key, token } => {
            let body = match data.as_deref() {
                None => Vec::new(),
                Some("-") => {
                    let mut b = Vec::new();
                    std::io::stdin().read_to_end(&mut b)?;
                    b
                }
                Some(d) if d.starts_with('@') => {
                    std::fs::read(&d[1..]).map_err(|e| anyhow::anyhow!("{}: {e}", &d[1..]))?
                }
                Some(d) => d.as_bytes().to_vec(),
            };
            if !strata_fn::function::valid_name(&name) {
                anyhow::bail!("{name:?} is not a function name");
            }
            let ep = http::Endpoint::parse(&server, &http::ClientTls { ca: cacert, cert, key })?;
            let path = format!("{}/functions/{name}/invoke{}", ep.path, if asynchronous { "?async=true" } else { "" });
            let token = token.or_else(|| std::env::var("STRATA_FN_TOKEN").ok().filter(|t| !t.is_empty()));
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let a = rt.block_on(async {
                let mut c = http::Client::connect(&ep)
                    .await
                    .map_err(|e| anyhow::anyhow!("no server at {server} ({e}); start one with `strata-fn serve`"))?;
                c.call("POST", &path, &headers, &body).await.map_err(|e| anyhow::anyhow!("{server}: {e}"))
            })?;
            match a.status {
                200 => {
                    std::io::stdout().write_all(&a.body)?;
                    Ok(0)
                }
                202 => {
                    let v: serde_json::Value = serde_json::from_slice(&a.body)?;
                    println!("{}", v["id"].as_str().unwrap_or_default());
                    Ok(0)
                }
                status => {
                    eprintln!(
                        "strata-fn: {name}: HTTP {status}{}",
                        a.header("X-Exit-Code").map(|c| format!(" (exit code {c})")).unwrap_or_default()
                    );
                    std::io::stderr().write_all(&a.body)?;
                    Ok(1)
                }
            }
        }
        Command::Token { action } => {
            match action {
                TokenAction::Create { name, scopes } => {
                    let (t, full) = strata_fn::auth::create(&state, &name, &scopes)?;
                    eprintln!("strata-fn: token {} ({}) made; it is shown once:", t.id, t.name);
                    println!("{full}");
                }
                TokenAction::Ls => {
                    println!("{:<14} {:<20} {:<8} SCOPES", "ID", "NAME", "STATUS");
                    for t in strata_fn::auth::load(&state)? {
                        let status = if t.revoked { "revoked" } else { "active" };
                        println!("{:<14} {:<20} {:<8} {}", t.id, t.name, status, t.scopes.join(" "));
                    }
                }
                TokenAction::Revoke { id } => strata_fn::auth::revoke(&state, &id)?,
            }
            Ok(0)
        }
        Command::Usage { name, by } => {
            // The cluster's records where it has one: every node's invocations.
            let records = match &nats {
                Some(n) => strata_fn::cluster::records(n)?,
                None => store::read_log(&state)?,
            };
            usage(records, name.as_deref(), &by)
        }
        Command::Zygote => strata_fn::zygote::serve_stdin(),
        Command::Load { url, n, c, data, expect } => load(&url, n, c, data.as_bytes(), expect),
    }
}

fn utc(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 UTC with milliseconds.
fn timestamp(ms: u64) -> String {
    let t = utc(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn period(ms: u64, by: &str) -> String {
    let t = utc(ms);
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    match by {
        "hour" => format!("{y:04}-{m:02}-{d:02}T{:02}", t.hour()),
        "month" => format!("{y:04}-{m:02}"),
        _ => format!("{y:04}-{m:02}-{d:02}"),
    }
}

fn usage(records: Vec<store::Record>, name: Option<&str>, by: &str) -> anyhow::Result<i32> {
    if !["hour", "day", "month"].contains(&by) {
        anyhow::bail!("--by {by:?}: use hour, day or month");
    }
    #[derive(Default)]
    struct Sum {
        n: u64,
        errors: u64,
        timeouts: u64,
        duration_ms: f64,
        cpu_ms: f64,
        billed_ms: u64,
        gb_s: f64,
        peak: Option<u64>,
    }
    let mut sums: std::collections::BTreeMap<(String, String), Sum> = Default::default();
    for r in records {
        if name.is_some_and(|n| n != r.function) || !r.status.is_some_and(Status::is_final) || r.attempts == 0 {
            continue;
        }
        let s = sums.entry((r.function.clone(), period(r.accepted_ms, by))).or_default();
        s.n += 1;
        match r.status {
            Some(Status::Timeout) => s.timeouts += 1,
            Some(Status::Failed) | Some(Status::Dead) => s.errors += 1,
            _ => {}
        }
        s.duration_ms += r.duration_ms;
        s.cpu_ms += r.cpu_ms;
        s.billed_ms += r.billed_ms;
        s.gb_s += r.gb_seconds;
        if let Some(p) = r.peak_memory_bytes {
            s.peak = Some(s.peak.unwrap_or(0).max(p));
        }
    }
    println!(
        "{:<20} {:<13} {:>8} {:>7} {:>8} {:>12} {:>10} {:>11} {:>12} PEAK MEMORY",
        "FUNCTION", "PERIOD", "CALLS", "ERRORS", "TIMEOUTS", "WALL s", "CPU s", "BILLED s", "GB-s"
    );
    for ((f, p), s) in &sums {
        println!(
            "{:<20} {:<13} {:>8} {:>7} {:>8} {:>12.3} {:>10.3} {:>11.3} {:>12.6} {}",
            f,
            p,
            s.n,
            s.errors,
            s.timeouts,
            s.duration_ms / 1000.0,
            s.cpu_ms / 1000.0,
            s.billed_ms as f64 / 1000.0,
            s.gb_s,
            s.peak.map(|b| format!("{b} B")).unwrap_or_else(|| "unavailable (no memory controller)".into())
        );
    }
    Ok(0)
}

/// `n` POSTs of `data` to `url` over `c` keep-alive connections; prints the
/// throughput, latency percentiles and any failures as JSON.
fn load(url: &str, n: usize, c: usize, data: &[u8], expect: u16) -> anyhow::Result<i32> {
    let ep = std::sync::Arc::new(http::Endpoint::parse(url, &http::ClientTls::default())?);
    let path = if ep.path.is_empty() { "/".to_string() } else { ep.path.clone() };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let start = std::time::Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..c.max(1))
            .map(|_| {
                let (ep, path, next, data) = (ep.clone(), path.clone(), next.clone(), data.to_vec());
                tokio::spawn(async move {
                    let (mut lat, mut to_running, mut warm_lat) = (Vec::new(), Vec::new(), Vec::new());
                    let (mut failed, mut warm, mut statuses) = (0usize, 0usize, std::collections::BTreeMap::new());
                    let mut conn: Option<http::Client> = None;
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        if conn.is_none() {
                            conn = http::Client::connect(&ep).await.ok();
                        }
                        let t = std::time::Instant::now();
                        let result = match conn.as_mut() {
                            Some(cl) => cl.call("POST", &path, &[], &data).await.ok(),
                            None => None,
                        };
                        match result {
                            Some(a) => {
                                lat.push(t.elapsed());
                                *statuses.entry(a.status).or_insert(0usize) += 1;
                                if a.status != expect || (expect == 200 && a.body != data) {
                                    failed += 1;
                                }
                                if a.header("X-Start") == Some("warm") {
                                    warm += 1;
                                    warm_lat.push(t.elapsed());
                                }
                                if let Some(ms) = a.header("X-Start-Latency-Ms").and_then(|v| v.parse::<f64>().ok()) {
                                    to_running.push(ms);
                                }
                            }
                            None => {
                                failed += 1;
                                conn = None;
                            }
                        }
                    }
                    (lat, to_running, warm_lat, failed, warm, statuses)
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await);
        }
        all
    });
    let (mut lat, mut to_running, mut warm_lat) = (Vec::new(), Vec::<f64>::new(), Vec::new());
    let (mut failed, mut warm, mut statuses) = (0, 0, std::collections::BTreeMap::<u16, usize>::new());
    for w in results {
        let (l, r, wl, f, wm, st) = w.map_err(|_| anyhow::anyhow!("a load task panicked"))?;
        lat.extend(l);
        warm_lat.extend(wl);
        to_running.extend(r);
        failed += f;
        warm += wm;
        for (k, v) in st {
            *statuses.entry(k).or_insert(0) += v;
        }
    }
    let wall = start.elapsed();
    lat.sort();
    warm_lat.sort();
    let pct_of = |lat: &[std::time::Duration], p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let pct = |p: f64| pct_of(&lat, p);
    to_running.sort_by(f64::total_cmp);
    let run_pct = |p: f64| {
        to_running.get(((to_running.len() as f64 * p) as usize).min(to_running.len().saturating_sub(1))).copied()
    };
    let out = serde_json::json!({
        "p50_to_running_ms": run_pct(0.50), "p99_to_running_ms": run_pct(0.99),
        "requests": n, "concurrency": c, "completed": lat.len(), "failed": failed, "warm": warm,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        "seconds": wall.as_secs_f64(), "per_second": lat.len() as f64 / wall.as_secs_f64(),
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        // The answers that started warm alone: the others waited for a create.
        "p50_warm_ms": pct_of(&warm_lat, 0.50), "p99_warm_ms": pct_of(&warm_lat, 0.99),
    });
    println!("{out}");
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::timestamp(1_795_779_472_316), "2026-11-27T11:37:52.316Z");
        assert_eq!(super::period(951_782_400_000, "day"), "2000-02-29");
        assert_eq!(super::period(951_782_400_000, "month"), "2000-02");
        assert_eq!(super::period(951_782_400_000 + 3_600_000 * 5, "hour"), "2000-02-29T05");
    }
}
