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
        // clap's whole message: what is wrong (every missing argument by name), the usage line,
        // and where to get help; `--help` and `--version` go to stdout and exit 0, the rest
        // (bare `loadgen` too, which prints the help listing the subcommands) to stderr, exit 2.
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    // Pin before the runtime starts so every thread it creates inherits the generator's CPUs.
    if cli.command.spawns() {
        eprintln!("{}", spawn::pin_generator());
    }
    raise_open_files_limit();
    driver::set_client(cli.client);
    if linkr_loadgen::workers::quiet_worker() {
        driver::set_progress(false);
    }
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
            Command::Merge(args) => cli::merge_cmd(&args),
            Command::Worker(args) => linkr_loadgen::worker::serve(args.listen).await,
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
