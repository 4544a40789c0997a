//! Who may do what on the HTTP API: bearer tokens with scopes.
//!
//! A token is `sfn_<id>_<secret>`. Only the SHA-256 of the secret is kept, in
//! `STATE/tokens.json` (mode 0600), with the token's scopes; the CLI makes,
//! lists and revokes them (`strata-fn token ...`). The server reads the file
//! again when it changes, so a revocation holds from the next request.
//!
//! Scopes: `invoke` (every function, or `invoke:NAME,NAME` for some),
//! `read` (invocation records of anyone, function list, dead letters),
//! `metrics`, `admin` (all of them). A principal may always read the records
//! of its own invocations.
//!
//! With no token made, the server runs as before on loopback only (see
//! `check_listen`): whoever can reach a loopback port is already on the host.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

const FILE: &str = "tokens.json";
const PREFIX: &str = "sfn_";

/// A stored token (never the secret itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub scopes: Vec<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    Invoke(&'a str),
    Read,
    Metrics,
}

/// Why a request was not let in (the metrics label, never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials: 401.
    Missing,
    /// Not a token of ours: 401.
    Invalid,
    /// Revoked: 401.
    Revoked,
    /// A token whose scopes do not allow the call: 403.
    Forbidden,
    /// Too many failures from this address lately: 429.
    Throttled,
}

impl Denied {
    pub fn label(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Invalid => "invalid",
            Denied::Revoked => "revoked",
            Denied::Forbidden => "forbidden",
            Denied::Throttled => "throttled",
        }
    }
}

fn path(state: &Path) -> PathBuf {
    state.join(FILE)
}

/// The tokens of `state` (none when the file does not exist).
pub fn load(state: &Path) -> Result<Vec<Token>> {
    match std::fs::read(path(state)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Other(format!("{}: {e}", path(state).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::path(path(state), e)),
    }
}

fn save(state: &Path, tokens: &[Token]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = state.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::path(&tmp, e))?;
    f.write_all(&serde_json::to_vec_pretty(tokens)?).map_err(|e| Error::path(&tmp, e))?;
    f.sync_all().map_err(|e| Error::path(&tmp, e))?;
    std::fs::rename(&tmp, path(state)).map_err(|e| Error::path(path(state), e))
}

/// The longest secret hashed as given (longer ones cannot match).
const SECRET_MAX: usize = 128;

/// What is kept of a secret, computed in the same time for every input up to
/// [`SECRET_MAX`] bytes: the secret is hashed in a fixed-size buffer with its
/// length, so neither the stored secret nor the length of a guess shows in
/// how long a check takes.
fn digest(secret: &[u8]) -> String {
    let mut buf = [0u8; SECRET_MAX + 1];
    let n = secret.len().min(SECRET_MAX);
    buf[..n].copy_from_slice(&secret[..n]);
    buf[SECRET_MAX] = if secret.len() > SECRET_MAX { 0xff } else { n as u8 };
    hex(&Sha256::digest(buf))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| Error::path("/dev/urandom", e))?;
    std::io::Read::read_exact(&mut f, &mut b).map_err(|e| Error::path("/dev/urandom", e))?;
    Ok(b)
}

/// Checks a scope as given on the command line.
fn check_scope(s: &str) -> Result<()> {
    let ok = match s.split_once(':') {
        None => matches!(s, "invoke" | "read" | "metrics" | "admin"),
        Some(("invoke", names)) => !names.is_empty() && names.split(',').all(crate::function::valid_name),
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!("--scope {s:?}: one of invoke, invoke:NAME[,NAME...], read, metrics, admin")))
    }
}

/// Makes a token; returns it in full (shown once: only its hash is kept).
pub fn create(state: &Path, name: &str, scopes: &[String]) -> Result<(Token, String)> {
    if scopes.is_empty() {
        return Err(Error::Other("a token needs at least one --scope".into()));
    }
    for s in scopes {
        check_scope(s)?;
    }
    std::fs::create_dir_all(state).map_err(|e| Error::path(state, e))?;
    let mut tokens = load(state)?;
    let id = hex(&random(6)?);
    let secret = hex(&random(32)?);
    let created_ms =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let t = Token {
        id: id.clone(),
        name: name.to_string(),
        hash: digest(secret.as_bytes()),
        scopes: scopes.to_vec(),
        created_ms,
        revoked: false,
    };
    tokens.push(t.clone());
    save(state, &tokens)?;
    Ok((t, format!("{PREFIX}{id}_{secret}")))
}

/// Revokes token `id`.
pub fn revoke(state: &Path, id: &str) -> Result<()> {
    let mut tokens = load(state)?;
    let t = tokens.iter_mut().find(|t| t.id == id).ok_or_else(|| Error::Other(format!("no token {id:?}")))?;
    t.revoked = true;
    save(state, &tokens)
}

/// Whether any token that is not revoked exists: the API then requires one.
pub fn enabled(tokens: &[Token]) -> bool {
    tokens.iter().any(|t| !t.revoked)
}

/// Equal bytes, in a time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The principal (token id) a request authenticates as, or why not.
fn authenticate<'t>(tokens: &'t [Token], header: Option<&str>) -> std::result::Result<&'t Token, Denied> {
    let Some(h) = header else { return Err(Denied::Missing) };
    let Some(tok) = h.strip_prefix("Bearer ").map(str::trim) else { return Err(Denied::Invalid) };
    let Some((id, secret)) = tok.strip_prefix(PREFIX).and_then(|r| r.split_once('_')) else {
        return Err(Denied::Invalid);
    };
    // The hash is compared, never the secret.
    let digest = digest(secret.as_bytes());
    let found = tokens.iter().find(|t| same(t.id.as_bytes(), id.as_bytes()));
    match found {
        Some(t) if same(t.hash.as_bytes(), digest.as_bytes()) => {
            if t.revoked {
                Err(Denied::Revoked)
            } else {
                Ok(t)
            }
        }
        _ => Err(Denied::Invalid),
    }
}

fn allows(t: &Token, need: Need<'_>) -> bool {
    t.scopes.iter().any(|s| match (s.as_str(), need) {
        ("admin", _) => true,
        ("invoke", Need::Invoke(_)) => true,
        ("read", Need::Read) => true,
        ("metrics", Need::Metrics) => true,
        (s, Need::Invoke(f)) => s.strip_prefix("invoke:").is_some_and(|names| names.split(',').any(|n| n == f)),
        _ => false,
    })
}

/// Whether the token may read records of other principals.
pub fn reads_all(t: &Token) -> bool {
    t.scopes.iter().any(|s| s == "read" || s == "admin")
}

/// Failed attempts per client address within a window: past the limit, the
/// address is refused until the window passes.
const FAIL_WINDOW: Duration = Duration::from_secs(10);
const FAIL_LIMIT: u32 = 20;

/// The server's view of the tokens: reloaded when the file changes, with the
/// failure counts of client addresses.
pub struct Gatekeeper {
    state: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<Token>)>,
    failures: Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl Gatekeeper {
    pub fn new(state: &Path) -> Gatekeeper {
        Gatekeeper {
            state: state.to_path_buf(),
            cache: Mutex::new((None, Vec::new())),
            failures: Mutex::new(Default::default()),
        }
    }

    fn tokens(&self) -> Vec<Token> {
        let mtime = std::fs::metadata(path(&self.state)).and_then(|m| m.modified()).ok();
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.0 != mtime || mtime.is_none() {
            // A file that cannot be read denies everything rather than opening up.
            c.1 = load(&self.state).unwrap_or_else(|_| {
                vec![Token {
                    id: String::new(),
                    name: String::new(),
                    hash: String::new(),
                    scopes: Vec::new(),
                    created_ms: 0,
                    revoked: false,
                }]
            });
            c.0 = mtime;
        }
        c.1.clone()
    }

    /// Whether the API requires a token now.
    pub fn required(&self) -> bool {
        enabled(&self.tokens())
    }

    /// Lets a request in (the principal's token, or None when no token is
    /// required), or says why not.
    pub fn check(
        &self,
        peer: Option<std::net::IpAddr>,
        header: Option<&str>,
        need: Need<'_>,
    ) -> std::result::Result<Option<Token>, Denied> {
        let tokens = self.tokens();
        if !enabled(&tokens) {
            return Ok(None);
        }
        if let Some(ip) = peer {
            let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if f.get(&ip).is_some_and(|(since, n)| since.elapsed() < FAIL_WINDOW && *n >= FAIL_LIMIT) {
                return Err(Denied::Throttled);
            }
        }
        let result = authenticate(&tokens, header).and_then(|t| {
            if allows(t, need) {
                Ok(t.clone())
            } else {
                Err(Denied::Forbidden)
            }
        });
        if let (Err(Denied::Missing | Denied::Invalid | Denied::Revoked), Some(ip)) = (&result, peer) {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let e = f.entry(ip).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= FAIL_WINDOW {
                *e = (Instant::now(), 0);
            }
            e.1 += 1;
        }
        result.map(Some)
    }
}

/// Refuses a listen address the defaults do not allow: beyond loopback, the
/// API needs tokens, and TLS (`tls`) or `--insecure-http` to say that they
/// cross the network in the clear.
pub fn check_listen(listen: &str, state: &Path, tls: bool, insecure_http: bool) -> Result<()> {
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| listen.starts_with("localhost:"));
    if loopback {
        return Ok(());
    }
    if !enabled(&load(state)?) {
        return Err(Error::Other(format!(
            "--listen {listen}: beyond loopback the API needs credentials; make a token first \
             (strata-fn token create --scope ...)"
        )));
    }
    if !tls && !insecure_http {
        return Err(Error::Other(format!(
            "--listen {listen}: tokens would cross the network in the clear; give --tls-cert and \
             --tls-key, or pass --insecure-http to accept that"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-fn-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn tokens_scopes_and_revocation() {
        let s = state("scopes");
        assert!(!enabled(&load(&s).expect("load")));
        let (_, inv) = create(&s, "ci", &["invoke:hello".into()]).expect("create");
        let (rt, rd) = create(&s, "reader", &["read".into(), "metrics".into()]).expect("create");
        let tokens = load(&s).expect("load");
        assert!(tokens.iter().all(|t| !t.hash.is_empty() && !inv.contains(&t.hash)), "only hashes are kept");
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(authenticate(&tokens, None).err(), Some(Denied::Missing));
        assert_eq!(authenticate(&tokens, Some("Bearer sfn_nope_x")).err(), Some(Denied::Invalid));
        let ok = authenticate(&tokens, Some(&bearer(&inv))).expect("valid");
        assert!(allows(ok, Need::Invoke("hello")) && !allows(ok, Need::Invoke("other")) && !allows(ok, Need::Read));
        let r = authenticate(&tokens, Some(&bearer(&rd))).expect("valid");
        assert!(allows(r, Need::Read) && allows(r, Need::Metrics) && !allows(r, Need::Invoke("hello")));
        // A wrong secret of the right id, and a truncated one.
        let wrong = format!("{}x", &rd[..rd.len() - 1]);
        assert_eq!(authenticate(&tokens, Some(&bearer(&wrong))).err(), Some(Denied::Invalid));
        assert_eq!(authenticate(&tokens, Some(&bearer(&rd[..rd.len() - 3]))).err(), Some(Denied::Invalid));
        revoke(&s, &rt.id).expect("revoke");
        let tokens = load(&s).expect("load");
        assert_eq!(authenticate(&tokens, Some(&bearer(&rd))).err(), Some(Denied::Revoked));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(s.join(FILE)).expect("stat").permissions().mode() & 0o777, 0o600);
        for bad in ["root", "invoke:", "invoke:a/b", "read:x"] {
            assert!(create(&s, "x", &[bad.into()]).is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&s);
    }

    /// A bounded statistical check: a guess sharing all but the last
    /// character of the secret, a wrong guess of the right length and one of
    /// another length take the same time (medians of interleaved runs within
    /// 25% of each other; a byte-by-byte comparison of secrets or hashing
    /// that grows with the guess would show up far beyond that).
    #[test]
    fn a_check_takes_the_same_time_whatever_the_guess() {
        let s = state("timing");
        let (_, full) = create(&s, "t", &["invoke".into()]).expect("create");
        let tokens = load(&s).expect("load");
        let near = format!("Bearer {}{}", &full[..full.len() - 1], if full.ends_with('0') { '1' } else { '0' });
        let far = format!("Bearer {}{}", &full[..full.len() - 64], "f".repeat(64));
        let short = format!("Bearer {}{}", &full[..full.len() - 64], "f");
        let cases = [near, far, short];
        let mut times: Vec<Vec<u128>> = vec![Vec::new(); cases.len()];
        for _ in 0..4000 {
            for (i, c) in cases.iter().enumerate() {
                let t = Instant::now();
                let r = authenticate(&tokens, Some(c));
                times[i].push(t.elapsed().as_nanos());
                assert_eq!(r.err(), Some(Denied::Invalid));
            }
        }
        let medians: Vec<f64> = times
            .iter_mut()
            .map(|v| {
                v.sort_unstable();
                v[v.len() / 2] as f64
            })
            .collect();
        let (lo, hi) = medians.iter().fold((f64::MAX, 0f64), |(lo, hi), &m| (lo.min(m), hi.max(m)));
        assert!(hi / lo < 1.25, "median ns (near, far, short): {medians:?}");
        let _ = std::fs::remove_dir_all(&s);
    }

    /// An address that keeps failing is refused for the rest of the window,
    /// even with a good token; another address is not.
    #[test]
    fn an_address_that_keeps_failing_is_throttled() {
        let s = state("throttle");
        let (_, good) = create(&s, "t", &["invoke".into()]).expect("create");
        let gk = Gatekeeper::new(&s);
        let bad: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let other: std::net::IpAddr = "192.0.2.2".parse().expect("ip");
        let bearer = format!("Bearer {good}");
        for _ in 0..FAIL_LIMIT {
            assert_eq!(gk.check(Some(bad), Some("Bearer sfn_x_y"), Need::Read).err(), Some(Denied::Invalid));
        }
        assert_eq!(gk.check(Some(bad), Some(&bearer), Need::Invoke("f")).err(), Some(Denied::Throttled));
        assert!(gk.check(Some(other), Some(&bearer), Need::Invoke("f")).is_ok_and(|t| t.is_some()));
        // A forbidden scope is not a failed authentication: it does not count.
        for _ in 0..FAIL_LIMIT + 1 {
            assert_eq!(gk.check(Some(other), Some(&bearer), Need::Metrics).err(), Some(Denied::Forbidden));
        }
        let _ = std::fs::remove_dir_all(&s);
    }

    #[test]
    fn listening_beyond_loopback_needs_tokens_and_tls_or_a_word_about_it() {
        let s = state("listen");
        assert!(check_listen("127.0.0.1:8080", &s, false, false).is_ok());
        assert!(check_listen("[::1]:8080", &s, false, false).is_ok());
        let e = check_listen("0.0.0.0:8080", &s, true, true).expect_err("no tokens").to_string();
        assert!(e.contains("credentials"), "{e}");
        create(&s, "n", &["invoke".into()]).expect("create");
        let e = check_listen("0.0.0.0:8080", &s, false, false).expect_err("no tls").to_string();
        assert!(e.contains("--insecure-http") && e.contains("--tls-cert"), "{e}");
        assert!(check_listen("0.0.0.0:8080", &s, false, true).is_ok());
        assert!(check_listen("0.0.0.0:8080", &s, true, false).is_ok());
        let _ = std::fs::remove_dir_all(&s);
    }
}
