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
    let cmd = match parse_args(std::env::args().skip(1)) {
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

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
