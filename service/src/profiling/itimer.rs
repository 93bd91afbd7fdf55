//! The `itimer` sampler: pprof-rs as linkr used it before per-thread sampling (one process-wide
//! `ITIMER_PROF` timer, samples in libc, libgcc, the vDSO and the loader dropped). Kept only to
//! compare with; never chosen by `auto`.

use std::sync::Arc;

use super::{ProfileError, Stack};

const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso", "ld-linux"];

pub(crate) struct Sampler {
    guard: pprof::ProfilerGuard<'static>,
}

impl Sampler {
    pub(crate) fn start(frequency: i32) -> Result<Self, ProfileError> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency)
            .blocklist(BLOCKLIST)
            .build()
            .map_err(|e| match e {
                pprof::Error::Running => ProfileError::Busy,
                e => ProfileError::Failed(e.to_string()),
            })?;
        Ok(Self { guard })
    }

    /// Stops the timer and returns the symbolised stacks (root first).
    pub(crate) fn finish(self) -> Result<Vec<Stack>, ProfileError> {
        let report = self
            .guard
            .report()
            .build()
            .map_err(|e| ProfileError::Failed(e.to_string()))?;
        drop(self.guard);
        Ok(report
            .data
            .iter()
            .map(|(frames, &count)| Stack {
                tid: 0,
                thread: Arc::from(frames.thread_name_or_id().replace(';', ",")),
                frames: frames
                    .frames
                    .iter()
                    .rev()
                    .flat_map(|frame| frame.iter().rev())
                    .map(|symbol| Arc::from(symbol.name().replace(';', ",")))
                    .collect(),
                samples: u64::try_from(count).unwrap_or(0),
            })
            .collect())
    }
}
