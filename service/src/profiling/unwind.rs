//! Frame-pointer stack walks for the `SIGPROF` handler: async-signal-safe (no allocation, no
//! locks, no system calls), and reading only memory known to be mapped: each frame pointer must
//! lie between the interrupted stack pointer and the end of the writable anonymous mapping that
//! holds it (the thread's stack), taken from a snapshot of `/proc/self/maps`.

/// Sorted, merged address ranges `[start, end)` of writable anonymous mappings (thread stacks
/// among them), from `/proc/self/maps`.
pub(crate) struct StackRanges {
    ranges: Box<[(u64, u64)]>,
}

impl StackRanges {
    pub(crate) fn snapshot() -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        Self::parse(&maps)
    }

    fn parse(maps: &str) -> Self {
        let mut ranges: Vec<(u64, u64)> = maps
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let (range, perms) = (fields.next()?, fields.next()?);
                let inode = fields.nth(2)?;
                let path = fields.next().unwrap_or("");
                let stack = inode == "0" && (path.is_empty() || path == "[stack]");
                if !perms.starts_with("rw") || !stack {
                    return None;
                }
                let (start, end) = range.split_once('-')?;
                Some((
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                ))
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => merged.push((start, end)),
            }
        }
        Self {
            ranges: merged.into_boxed_slice(),
        }
    }

    /// End of the range holding `addr`.
    fn end_of(&self, addr: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|&(start, _)| start <= addr);
        let (start, end) = *self.ranges.get(i.checked_sub(1)?)?;
        (start <= addr && addr < end).then_some(end)
    }
}

/// Writes the interrupted `pc` and the return addresses found by following frame pointers from
/// `fp` into `out` (leaf first; return addresses minus one, inside their call instruction).
/// Returns how many were written.
///
/// # Safety
/// `sp` must be the interrupted thread's stack pointer, and `ranges` a snapshot of this process's
/// mappings taken while that thread's stack was mapped.
pub(crate) unsafe fn walk(
    pc: u64,
    fp: u64,
    sp: u64,
    ranges: &StackRanges,
    out: &mut [u64],
) -> usize {
    if out.is_empty() {
        return 0;
    }
    out[0] = pc;
    let mut n = 1;
    let Some(end) = ranges.end_of(sp) else {
        return n;
    };
    let mut fp = fp;
    while n < out.len() {
        if fp < sp || !fp.is_multiple_of(8) || fp.saturating_add(16) > end {
            break;
        }
        // SAFETY: `[fp, fp + 16)` lies inside the mapping that holds the stack pointer.
        let (next, ret) = unsafe {
            let p = fp as *const u64;
            (p.read_volatile(), p.add(1).read_volatile())
        };
        if ret == 0 {
            break;
        }
        out[n] = ret - 1;
        n += 1;
        // The stack grows down: callers' frames are at higher addresses.
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_keep_anonymous_writable_mappings_merged() {
        let maps = "\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 123 /usr/bin/linkr
7f0000000000-7f0000001000 ---p 00000000 00:00 0
7f0000001000-7f0000801000 rw-p 00000000 00:00 0
7f0000801000-7f0000802000 rw-p 00000000 00:00 0
7f0000900000-7f0000901000 rw-p 00000000 08:01 77 /usr/lib/libc.so.6
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
";
        let r = StackRanges::parse(maps);
        assert_eq!(
            &*r.ranges,
            &[
                (0x7f00_0000_1000, 0x7f00_0080_2000),
                (0x7ffc_0000_0000, 0x7ffc_0002_1000)
            ]
        );
        assert_eq!(r.end_of(0x7f00_0000_5000), Some(0x7f00_0080_2000));
        assert_eq!(r.end_of(0x7f00_0000_0800), None);
        assert_eq!(r.end_of(0x7f00_0090_0000), None);
    }

    #[test]
    fn walk_follows_a_chain_and_stops_outside_the_stack() {
        // A fake stack: three frames, each [saved fp, return address], the last one's saved fp 0.
        let mut stack = [0u64; 16];
        let ptr = stack.as_mut_ptr();
        let base = ptr as u64;
        let at = |i: usize| base + 8 * i as u64;
        for (i, v) in [
            (2, at(6)),
            (3, 0x1001),
            (6, at(10)),
            (7, 0x2001),
            (10, 0),
            (11, 0x3001),
        ] {
            // SAFETY: inside `stack`.
            unsafe { ptr.add(i).write(v) };
        }
        let ranges = StackRanges {
            ranges: Box::new([(base, base + 8 * 16)]),
        };
        let mut out = [0u64; 8];
        // SAFETY: `stack` is live and the ranges cover exactly it.
        let n = unsafe { walk(0x42, at(2), base, &ranges, &mut out) };
        assert_eq!(&out[..n], &[0x42, 0x1000, 0x2000, 0x3000]);
        // A frame pointer outside the range is not followed.
        // SAFETY: as above.
        let n = unsafe { walk(0x42, base + 4096, base, &ranges, &mut out) };
        assert_eq!(n, 1);
        // A stack pointer in no known range: the leaf only.
        // SAFETY: as above.
        let n = unsafe { walk(0x42, at(2), 8, &ranges, &mut out) };
        assert_eq!(n, 1);
    }
}
