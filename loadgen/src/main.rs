//! `loadgen`: see `loadgen --help` and the `cli` module.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use linkr_loadgen::cli::{self, Cli, Command, EXIT_INTERRUPTED, EXIT_USAGE};
use linkr_loadgen::{LoadgenError, driver, spawn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("{}", cli::one_line(&e));
                    ExitCode::from(EXIT_USAGE)
                }
            };
        }
    };
    // Pin before the runtime starts so every thread it creates inherits the generator's CPUs.
    if cli.command.spawns() {
        eprintln!("{}", spawn::pin_generator());
    }
    raise_open_files_limit();
    driver::install_interrupt_handler();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run_cmd(args).await,
            Command::Knee(args) => linkr_loadgen::knee::run(args).await,
            Command::Compare(args) => cli::compare_cmd(&args),
        }
    });
    match result {
        Ok(code) => code,
        Err(LoadgenError::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A saturated step can hold one connection per user (up to 10,000): lift the soft limit on open
/// files to the hard one.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
