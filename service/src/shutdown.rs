//! Stop signals: the first SIGTERM or SIGINT starts a graceful shutdown; a second one ends the
//! process at once with a non-zero status (128 + signal number).

use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// Installs the handlers and returns a future that resolves on the first stop signal.
/// Must be called inside a tokio runtime.
pub fn stop_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (first_tx, first_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stop signal received; shutting down gracefully"
        );
        let _ = first_tx.send(());
        let (name, code) = tokio::select! {
            _ = term.recv() => ("SIGTERM", 128 + libc::SIGTERM),
            _ = int.recv() => ("SIGINT", 128 + libc::SIGINT),
        };
        tracing::error!(
            signal = name,
            "second stop signal; exiting without finishing the shutdown"
        );
        std::process::exit(code);
    });
    Ok(async move {
        let _ = first_rx.await;
    })
}
