//! `linkr`: parse the configuration, set up logging, bind, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use linkr::app::{self, Listeners};
use linkr::config::Config;

fn main() -> ExitCode {
    let loaded = Config::load().unwrap_or_else(|e| e.exit());
    let config = loaded.config;
    if loaded.print_config {
        println!("{}", config.to_redacted_json());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = linkr::telemetry::init(&config) {
        eprintln!("linkr: {e}");
        return ExitCode::FAILURE;
    }
    let heap_profiler = linkr::alloc::start_heap_profiler();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let stop = linkr::shutdown::stop_signal()?;
        let listeners = Listeners::bind(&config).await?;
        app::run(config, listeners, stop).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Export the spans still buffered (outside the runtime: the exporter's client blocks).
    #[cfg(feature = "otel")]
    linkr::telemetry::otel::shutdown();
    match result {
        Ok(()) => {
            drop(heap_profiler);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "linkr stopped with an error");
            ExitCode::FAILURE
        }
    }
}
