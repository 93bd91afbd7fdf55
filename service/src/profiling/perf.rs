//! The `perf-events` sampler: one software `cpu-clock` event per thread (`perf_event_open`),
//! sampling every `period` nanoseconds of that thread's CPU time with its callchain (kernel
//! frames, then the user frames the kernel walked by frame pointer), read from a small mmap ring
//! buffer per thread by the profiler thread.
//!
//! The system call is made directly with a `repr(C)` attribute struct rather than through a crate
//! (perf-event2, perf-event-open): they expose callchain sampling, but through generic record
//! parsers and several more dependencies, while this needs one event type, four sample fields and
//! two record types, about a page of code against a stable kernel ABI.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Samples;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (Linux 4.8); later fields stay zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 112);

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_SAMPLE_IP: u64 = 1 << 0;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_CALLCHAIN: u64 = 1 << 5;
const PERF_SAMPLE_PERIOD: u64 = 1 << 8;
const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_EXCLUDE_KERNEL: u64 = 1 << 5;
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// Callchain entries at or above this are context markers (`PERF_CONTEXT_KERNEL`, `_USER`, ...).
const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;
/// `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
/// Ring buffer sizes to try, in pages (a power of two): 128 KiB holds about 300 ms of samples at
/// 1 kHz with 40-frame stacks, against a drain every 10 ms. Smaller ones when locked memory is
/// short.
const DATA_PAGES: [usize; 4] = [32, 8, 2, 1];

/// Whether to sample in the kernel too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Kernel samples or nothing.
    Required,
    /// Kernel samples when allowed, else user-only.
    IfAllowed,
    /// User-only.
    Excluded,
}

pub(crate) struct Sampler {
    period_ns: u64,
    kernel: bool,
    page: usize,
    pages: usize,
    rings: HashMap<u32, Ring>,
    record: Vec<u8>,
    frames: Vec<u64>,
}

struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the ring and only touched through `&mut Sampler`.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `watch`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Sampler {
    /// Probes `perf_event_open` on the calling thread (the profiler's own, which is then sampled
    /// like the others once the scan finds it).
    pub(crate) fn open(period_ns: u64, kernel: Kernel) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mut sampler = Self {
            period_ns,
            kernel: kernel != Kernel::Excluded,
            page,
            pages: DATA_PAGES[0],
            rings: HashMap::new(),
            record: Vec::with_capacity(4096),
            frames: Vec::with_capacity(256),
        };
        let me = super::threads::gettid();
        match sampler.open_event(me) {
            Ok(fd) => drop(fd),
            Err(e)
                if kernel == Kernel::IfAllowed
                    && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) =>
            {
                sampler.kernel = false;
                drop(sampler.open_event(me)?);
            }
            Err(e) => return Err(e),
        }
        Ok(sampler)
    }

    /// Whether kernel frames are sampled.
    pub(crate) fn kernel(&self) -> bool {
        self.kernel
    }

    fn open_event(&self, tid: u32) -> io::Result<OwnedFd> {
        let mut flags = ATTR_DISABLED | ATTR_EXCLUDE_HV;
        if !self.kernel {
            flags |= ATTR_EXCLUDE_KERNEL;
        }
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_CPU_CLOCK,
            sample_period: self.period_ns,
            sample_type: PERF_SAMPLE_IP
                | PERF_SAMPLE_TID
                | PERF_SAMPLE_PERIOD
                | PERF_SAMPLE_CALLCHAIN,
            flags,
            ..Default::default()
        };
        let pid = libc::pid_t::try_from(tid).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `attr` is a valid, fully initialised `perf_event_attr` of the size it declares.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                pid,
                -1 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    /// Opens, maps and enables an event on thread `tid`.
    pub(crate) fn watch(&mut self, tid: u32) -> io::Result<()> {
        let fd = self.open_event(tid)?;
        let (base, len) = loop {
            let len = (1 + self.pages) * self.page;
            // SAFETY: a fresh shared mapping of the event's ring buffer.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if base != libc::MAP_FAILED {
                break (base.cast::<u8>(), len);
            }
            let e = io::Error::last_os_error();
            // Out of lockable memory (perf_event_mlock_kb, RLIMIT_MEMLOCK): smaller rings.
            match DATA_PAGES.iter().position(|&p| p == self.pages) {
                Some(i) if i + 1 < DATA_PAGES.len() => self.pages = DATA_PAGES[i + 1],
                _ => return Err(e),
            }
        };
        let ring = Ring { fd, base, len };
        // SAFETY: enabling an event we own.
        if unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(old) = self.rings.insert(tid, ring) {
            // A reused thread id: what the old ring holds belonged to the exited thread.
            drop(old);
        }
        Ok(())
    }

    /// Reads what the ring of exited thread `tid` still holds, then closes it.
    pub(crate) fn forget(&mut self, tid: u32, samples: &mut Samples) {
        if let Some(ring) = self.rings.remove(&tid) {
            self.drain_ring(&ring, samples);
        }
    }

    /// Disables every event (their rings stay readable).
    pub(crate) fn stop(&mut self) {
        for ring in self.rings.values() {
            // SAFETY: disabling an event we own.
            unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_DISABLE, 0) };
        }
    }

    /// Moves every complete record out of the rings into `samples`.
    pub(crate) fn drain(&mut self, samples: &mut Samples) {
        let rings = std::mem::take(&mut self.rings);
        for ring in rings.values() {
            self.drain_ring(ring, samples);
        }
        self.rings = rings;
    }

    fn drain_ring(&mut self, ring: &Ring, samples: &mut Samples) {
        let data_size = (ring.len - self.page) as u64;
        // SAFETY: the first page of the mapping is the kernel's `perf_event_mmap_page`; the
        // kernel writes `data_head` (read with acquire, as the ABI requires) and we own
        // `data_tail` (written with release once the records are consumed).
        let (head, tail_ref) = unsafe {
            let head = (*ring.base.add(DATA_HEAD).cast::<AtomicU64>()).load(Ordering::Acquire);
            (head, &*ring.base.add(DATA_TAIL).cast::<AtomicU64>())
        };
        let mut tail = tail_ref.load(Ordering::Relaxed);
        // SAFETY: the data area follows the first page and is `data_size` bytes long.
        let data =
            unsafe { std::slice::from_raw_parts(ring.base.add(self.page), data_size as usize) };
        while head.saturating_sub(tail) >= 8 {
            let at = (tail % data_size) as usize;
            // Records are 8-byte aligned and the data size is a multiple of 8: a header never
            // wraps.
            let header = &data[at..at + 8];
            let kind = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
            let size = usize::from(u16::from_ne_bytes(
                header[6..8].try_into().expect("2 bytes"),
            ));
            if size < 8 || head - tail < size as u64 {
                break;
            }
            self.record.clear();
            let first = size.min(data.len() - at);
            self.record.extend_from_slice(&data[at..at + first]);
            self.record.extend_from_slice(&data[..size - first]);
            self.parse(kind, samples);
            tail += size as u64;
        }
        tail_ref.store(tail, Ordering::Release);
    }

    fn parse(&mut self, kind: u32, samples: &mut Samples) {
        let body = &self.record[8..];
        let word = |i: usize| -> Option<u64> {
            body.get(i * 8..i * 8 + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        match kind {
            PERF_RECORD_SAMPLE => {
                // ip, pid/tid, period, nr, ips[nr]: the order of `perf_event_header` docs.
                let (Some(pid_tid), Some(period), Some(nr)) = (word(1), word(2), word(3)) else {
                    return;
                };
                let tid = (pid_tid >> 32) as u32;
                self.frames.clear();
                let mut first_in_context = true;
                for i in 0..nr as usize {
                    let Some(ip) = word(4 + i) else { break };
                    if ip >= PERF_CONTEXT_MAX {
                        first_in_context = true;
                        continue;
                    }
                    if ip == 0 {
                        // The end of a user walk that met a null return address.
                        continue;
                    }
                    // Past the interrupted instruction, entries are return addresses: the call
                    // is the instruction before.
                    self.frames.push(if first_in_context { ip } else { ip - 1 });
                    first_in_context = false;
                }
                if self.frames.is_empty()
                    && let Some(ip) = word(0)
                {
                    self.frames.push(ip);
                }
                samples.add(tid, &self.frames, period);
            }
            PERF_RECORD_LOST => {
                if let Some(lost) = word(1) {
                    samples.add_lost(lost);
                }
            }
            _ => {}
        }
    }
}
