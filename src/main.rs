//! The callgate command line: logging setup, profile choice, and the runtime shell.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use callgate::edge::{self, Options};

const USAGE: &str = "\
callgate: SIP/RTP edge with ACD and CTI for civil-service call centres

USAGE:
    callgate [--profile DIR] [--sip ADDR:PORT] [--http ADDR:PORT] [--db PATH]
    callgate check [--profile DIR]
    callgate ctl [--http ADDR:PORT | --socket PATH] [--token T] COMMAND ...   (callgate ctl --help)
    callgate report [--profile DIR] [--db PATH] [--tenant T] [--date YYYY-MM-DD]
                    [--interval 15|30|60] [--format json|csv]
    callgate hash-password --realm REALM --extension EXT PASSWORD

    With no arguments callgate runs the profile in sip-profiles/default.

OPTIONS:
    --profile DIR      the profile directory (default: sip-profiles/default)
    --sip ADDR:PORT    SIP listen address (UDP and TCP), overriding the profile
    --http ADDR:PORT   HTTP listen address (/metrics, /healthz), overriding the profile
    --db PATH          the call-record database (SQLite), overriding the profile
    -h, --help         this text
    -V, --version      the version

Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=callgate=debug) for more.
";

enum Command {
    Run(Options),
    Check(PathBuf),
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut opts = Options { profile: PathBuf::from("sip-profiles/default"), ..Options::default() };
    let mut check = false;
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some("check") {
        check = true;
        args.next();
    } else if args.peek().map(String::as_str) == Some("run") {
        args.next();
    }
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--profile" => opts.profile = PathBuf::from(value("--profile")?),
            "--sip" => opts.sip = Some(parse_addr("--sip", &value("--sip")?)?),
            "--http" => opts.http = Some(parse_addr("--http", &value("--http")?)?),
            "--db" => opts.db = Some(PathBuf::from(value("--db")?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(if check { Command::Check(opts.profile) } else { Command::Run(opts) })
}

fn parse_addr(flag: &str, s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("{flag} takes ADDR:PORT (e.g. 127.0.0.1:5060 or [::1]:5060), not {s:?}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // The CTI client: the same protocol as agent desktops, for operators.
        Some("ctl") => return ExitCode::from(callgate::cti::client::run_ctl(&args[1..]).clamp(0, 255) as u8),
        Some("report") => return report(&args[1..]),
        Some("hash-password") => return hash_password(&args[1..]),
        _ => {}
    }
    let cmd = match parse_args(args.into_iter()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("callgate: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            use std::io::Write;
            let _ = write!(std::io::stdout(), "{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("callgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check(dir) => match callgate::config::Profile::load(&dir) {
            Ok(p) => {
                // A closed pipe (e.g. `| head`) is not an error worth a panic.
                use std::io::Write;
                let _ = writeln!(std::io::stdout(), "{}", p.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("callgate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(opts) => {
            init_logging();
            match edge::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("callgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `callgate report`: an interval report of one day from the records, on stdout.
fn report(args: &[String]) -> ExitCode {
    let mut profile = PathBuf::from("sip-profiles/default");
    let (mut db, mut tenant, mut date, mut interval, mut format) = (None, None, None, 30u32, "json".to_owned());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--profile" => profile = PathBuf::from(v()?),
                "--db" => db = Some(PathBuf::from(v()?)),
                "--tenant" => tenant = Some(v()?),
                "--date" => date = Some(v()?),
                "--interval" => interval = v()?.parse().map_err(|_| "--interval takes 15, 30 or 60".to_owned())?,
                "--format" => format = v()?,
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            eprintln!("callgate report: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let p = match callgate::config::Profile::load(&profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let db = db.unwrap_or_else(|| p.records.database.clone());
    let tenant = match tenant.or_else(|| p.tenants.first().map(|t| t.id.clone())) {
        Some(t) => t,
        None => {
            eprintln!("callgate report: the profile has no tenant");
            return ExitCode::FAILURE;
        }
    };
    let cfg = callgate::call::stats_config_for(&p);
    let off = cfg.offset(&tenant);
    let day = match date {
        Some(d) => match callgate::stats::Date::parse(&d) {
            Some(d) => d,
            None => {
                eprintln!("callgate report: --date takes YYYY-MM-DD, not {d:?}");
                return ExitCode::from(2);
            }
        },
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            callgate::stats::Date::of(now, off)
        }
    };
    let Some(len) = callgate::stats::IntervalLen::from_minutes(interval) else {
        eprintln!("callgate report: --interval takes 15, 30 or 60");
        return ExitCode::from(2);
    };
    let mut stats = callgate::stats::Stats::new(cfg);
    if let Err(e) = callgate::records::RecordsReader::open(&db).and_then(|r| r.load_day(&mut stats, &tenant, day)) {
        eprintln!("callgate report: {e}");
        return ExitCode::FAILURE;
    }
    let rep = stats.report(&tenant, day, len);
    use std::io::Write;
    let out = if format == "csv" { rep.to_csv() } else { rep.to_json() };
    let _ = writeln!(std::io::stdout(), "{out}");
    ExitCode::SUCCESS
}

/// `callgate hash-password`: the `ha1_md5` / `ha1_sha256` lines for an agent's profile entry, so the
/// profile need not hold the password.
fn hash_password(args: &[String]) -> ExitCode {
    let (mut realm, mut ext, mut pw) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--realm" => realm = it.next().cloned(),
            "--extension" => ext = it.next().cloned(),
            other => pw = Some(other.to_owned()),
        }
    }
    let (Some(realm), Some(ext), Some(pw)) = (realm, ext, pw) else {
        eprintln!("callgate hash-password: needs --realm REALM --extension EXT PASSWORD\n\n{USAGE}");
        return ExitCode::from(2);
    };
    println!("{}", callgate::config::hash::hash_password_toml(&ext, &realm, &pw));
    ExitCode::SUCCESS
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
