//! The in-memory index: the authoritative read path for redirects.
//!
//! Layout, chosen for RSS per link (DESIGN: <= 128 B at 1M links):
//! - 64 shards, each an `RwLock` over a dense `Vec<Entry>` (24 bytes per link) and a
//!   `hashbrown::HashTable<u32>` of slot numbers (4 bytes per bucket + 1 control byte).
//!   A `DashMap<CompactString, Entry>` stores key and value in every bucket; hashbrown keeps
//!   at most 7/8 of its buckets full and doubles, so at 1M links it holds 2^21 buckets of
//!   112 bytes where this table holds 2^21 buckets of 5 bytes. Measured at 1M links with
//!   ~60-byte URLs (`store_1m_*` tests): ~380 B/link for the DashMap layout; 122 B/link of the
//!   whole process's RSS here (entries 24, table 10, records 70, the rest of the process ~14).
//! - An entry is 24 bytes: click count, owner, `created_at` as u32 seconds when it fits, and
//!   where its record is in the shard's arena (chunk number and offset in a u32, length).
//!   The record (`[created_at if it did not fit] [expires_at if any] code url`) is packed
//!   into 16 KiB chunks: no per-link allocation, no allocator rounding. Each chunk's written
//!   part is published as one `Bytes`, so a `Location` or a dirty-list code is a slice of it
//!   (a reference-count increment, never an allocation). A chunk is freed when every link
//!   in it is gone (deleted links' bytes linger until then), and its number is reused.

use std::hash::BuildHasher;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};

/// `expires_at` of a link that never expires.
pub(crate) const NEVER: i64 = i64::MAX;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Bytes of one arena chunk; a record's offset in its chunk takes `OFFSET_BITS` bits.
const CHUNK: usize = 1 << OFFSET_BITS;
const OFFSET_BITS: u32 = 14;
/// Records larger than this get a chunk of their own, so a chunk wastes little.
const OWN_CHUNK_OVER: usize = CHUNK / 8;
/// `Entry::created` when `created_at` does not fit: the record starts with it as an i64.
const WIDE_TIME: u32 = u32::MAX;
/// `Entry::code` flag: the record holds `expires_at` (after a wide `created_at`).
const HAS_EXPIRY: u8 = 0x80;

/// One link in its shard, 24 bytes. Its record (`[created_at i64 if wide] [expires_at i64 if
/// any] code url`) lives in the shard's arena; callers see it through a [`Link`].
pub(crate) struct Entry {
    pub(crate) clicks: AtomicU64,
    /// Chunk number << `OFFSET_BITS` | the record's offset in that chunk.
    at: u32,
    pub(crate) owner: u32,
    /// `created_at` if it is in `0..WIDE_TIME`, otherwise `WIDE_TIME`.
    created: u32,
    /// The record's length.
    len: u16,
    /// The code's length | `HAS_EXPIRY`.
    code: u8,
    pub(crate) dirty: AtomicBool,
}

impl Entry {
    #[inline]
    fn chunk(&self) -> usize {
        (self.at >> OFFSET_BITS) as usize
    }

    /// Where the record starts in its chunk.
    #[inline]
    fn offset(&self) -> usize {
        (self.at & ((1 << OFFSET_BITS) - 1)) as usize
    }

    #[inline]
    fn header_len(&self) -> usize {
        8 * usize::from(self.created == WIDE_TIME) + 8 * usize::from(self.code & HAS_EXPIRY != 0)
    }

    #[inline]
    fn code_len(&self) -> usize {
        usize::from(self.code & !HAS_EXPIRY)
    }
}

/// A link to insert: its code and URL are copied into the shard's arena.
pub(crate) struct NewEntry<'a> {
    code: &'a [u8],
    url: &'a [u8],
    created_at: i64,
    expires_at: i64,
    owner: u32,
    clicks: u64,
}

impl<'a> NewEntry<'a> {
    pub(crate) fn new(
        code: &'a [u8],
        url: &'a [u8],
        created_at: i64,
        expires_at: i64,
        owner: u32,
        clicks: u64,
    ) -> Self {
        Self {
            code,
            url,
            created_at,
            expires_at,
            owner,
            clicks,
        }
    }
}

/// The chunk of an indexed entry's record.
#[inline]
fn chunk_of<'a>(chunks: &'a [Chunk], entry: &Entry) -> &'a Chunk {
    debug_assert!(entry.chunk() < chunks.len());
    // SAFETY: an entry is made by `Records::push`, which returns the number of a chunk it
    // holds; chunks are never removed from the list (freed ones are reused in place).
    unsafe { chunks.get_unchecked(entry.chunk()) }
}

/// An entry with its record, as lookups and visits see it.
pub(crate) struct Link<'a> {
    entry: &'a Entry,
    chunk: &'a Chunk,
    /// Where the code starts in the chunk (after the record's header).
    code_at: usize,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
}

impl Deref for Link<'_> {
    type Target = Entry;

    #[inline]
    fn deref(&self) -> &Entry {
        self.entry
    }
}

impl<'a> Link<'a> {
    #[inline]
    fn new(entry: &'a Entry, chunks: &'a [Chunk]) -> Self {
        let chunk = chunk_of(chunks, entry);
        let mut at = entry.offset();
        let created_at = if entry.created == WIDE_TIME {
            at += 8;
            chunk.i64_at(at - 8)
        } else {
            i64::from(entry.created)
        };
        let expires_at = if entry.code & HAS_EXPIRY != 0 {
            at += 8;
            chunk.i64_at(at - 8)
        } else {
            NEVER
        };
        Self {
            entry,
            chunk,
            code_at: at,
            created_at,
            expires_at,
        }
    }

    #[inline]
    fn url_at(&self) -> usize {
        self.code_at + self.entry.code_len()
    }

    #[inline]
    fn end(&self) -> usize {
        self.entry.offset() + usize::from(self.entry.len)
    }

    pub(crate) fn code(&self) -> &'a [u8] {
        // SAFETY: the code is inside the entry's record, written before it was indexed.
        unsafe { self.chunk.written(self.code_at, self.url_at()) }
    }

    pub(crate) fn code_str(&self) -> &'a str {
        std::str::from_utf8(self.code()).unwrap_or_default()
    }

    pub(crate) fn url(&self) -> &'a [u8] {
        // SAFETY: as for `code`.
        unsafe { self.chunk.written(self.url_at(), self.end()) }
    }

    pub(crate) fn url_str(&self) -> &'a str {
        std::str::from_utf8(self.url()).unwrap_or_default()
    }

    /// The `Location` value, sharing the arena chunk (no allocation).
    #[inline]
    pub(crate) fn location(&self) -> Bytes {
        self.chunk.shared.slice(self.url_at()..self.end())
    }

    /// The code, sharing the arena chunk (no allocation); the dirty list holds these.
    #[inline]
    pub(crate) fn code_bytes(&self) -> Bytes {
        self.chunk.shared.slice(self.code_at..self.url_at())
    }

    #[inline]
    pub(crate) fn is_expired(&self, now: i64) -> bool {
        self.expires_at != NEVER && now >= self.expires_at
    }

    pub(crate) fn expires_at(&self) -> Option<i64> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }
}

/// Memory of one arena chunk. Bytes below the arena's write position are written once and
/// never change; the arena writes above it through `ptr`, which no reference covers.
struct ChunkBuf {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: the buffer is plain bytes; writes happen only under the shard's write lock and only
// to bytes that no reader has been given.
unsafe impl Send for ChunkBuf {}
// SAFETY: as above.
unsafe impl Sync for ChunkBuf {}

impl ChunkBuf {
    fn new(cap: usize) -> Arc<Self> {
        let layout = std::alloc::Layout::array::<u8>(cap).expect("chunk size fits");
        // SAFETY: `cap` is non-zero (records are never empty).
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Arc::new(Self { ptr, cap })
    }

    /// Bytes `range` of the buffer, which must have been written.
    ///
    /// # Safety
    /// `range` is within what the arena has written to this buffer.
    unsafe fn written(&self, start: usize, end: usize) -> &[u8] {
        debug_assert!(start <= end && end <= self.cap);
        // SAFETY: written bytes are initialised and never written again (caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), end - start) }
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::array::<u8>(self.cap).expect("chunk size fits");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// The written prefix of a chunk, as the owner of a `Bytes`.
struct Written(Arc<ChunkBuf>, usize);

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `self.1` bytes were written before this was made.
        unsafe { self.0.written(0, self.1) }
    }
}

/// A chunk of a shard's arena.
struct Chunk {
    /// `buf`'s memory (null once the chunk is freed), read without going through the `Arc`.
    base: *const u8,
    buf: Option<Arc<ChunkBuf>>,
    /// The written part, published as `Bytes` for zero-copy slices (`Location`, dirty list).
    shared: Bytes,
    /// Entries whose record is in this chunk; the chunk is freed when none is left.
    live: u32,
}

// SAFETY: `base` points into `buf`, which the chunk owns; reads of it follow the rules of
// `ChunkBuf` (only written bytes, under the shard's lock or through a published `Bytes`).
unsafe impl Send for Chunk {}
// SAFETY: as above.
unsafe impl Sync for Chunk {}

impl Chunk {
    /// Bytes `start..end` of the chunk.
    ///
    /// # Safety
    /// The range is inside a record that was written before its entry was indexed (so the
    /// chunk is allocated).
    #[inline]
    unsafe fn written(&self, start: usize, end: usize) -> &[u8] {
        debug_assert!(!self.base.is_null() && start <= end);
        // SAFETY: written bytes are initialised and never written again (caller's contract).
        unsafe { std::slice::from_raw_parts(self.base.add(start), end - start) }
    }

    /// The i64 (little endian) of a record's header at `at`.
    #[inline]
    fn i64_at(&self, at: usize) -> i64 {
        // SAFETY: callers read a header field of a live entry's record.
        let bytes = unsafe { self.written(at, at + 8) };
        i64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }

    /// The code of `entry`, whose record is in this chunk.
    #[inline]
    fn code(&self, entry: &Entry) -> &[u8] {
        let start = entry.offset() + entry.header_len();
        // SAFETY: the entry's record was written before the entry was indexed.
        unsafe { self.written(start, start + entry.code_len()) }
    }
}

/// A shard's arena: records packed into 16 KiB chunks, numbered for the entries.
#[derive(Default)]
struct Records {
    chunks: Vec<Chunk>,
    /// Numbers of freed chunks, reused first.
    free: Vec<u32>,
    /// The chunk being filled: its number and write position.
    current: Option<(u32, usize)>,
}

impl Records {
    /// Writes the record of `new`; returns (chunk number << OFFSET_BITS | offset, length).
    /// `publish` makes it visible to `share` now (otherwise at the chunk's end or `publish_all`).
    fn push(&mut self, new: &NewEntry<'_>, created: u32, publish: bool) -> (u32, u16) {
        let header =
            8 * usize::from(created == WIDE_TIME) + 8 * usize::from(new.expires_at != NEVER);
        let len = header + new.code.len() + new.url.len();
        let len16 = u16::try_from(len).expect("records are shorter than 64 KiB");
        let (number, offset) = if len > OWN_CHUNK_OVER {
            let number = self.new_chunk(len);
            (number, 0)
        } else {
            match self.current {
                Some((number, offset)) if offset + len <= CHUNK => (number, offset),
                _ => {
                    if let Some((old, end)) = self.current.take() {
                        self.publish(old, end);
                        if self.chunks[old as usize].live == 0 {
                            self.release(old);
                        }
                    }
                    (self.new_chunk(CHUNK), 0)
                }
            }
        };
        let chunk = &mut self.chunks[number as usize];
        let buf = chunk.buf.as_ref().expect("a new chunk is allocated");
        let mut at = offset;
        let mut write = |bytes: &[u8]| {
            debug_assert!(at + bytes.len() <= buf.cap);
            // SAFETY: `at..at + len` is inside the buffer and above everything written or
            // shared so far, so no reference covers it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    buf.ptr.as_ptr().add(at),
                    bytes.len(),
                );
            }
            at += bytes.len();
        };
        if created == WIDE_TIME {
            write(&new.created_at.to_le_bytes());
        }
        if new.expires_at != NEVER {
            write(&new.expires_at.to_le_bytes());
        }
        write(new.code);
        write(new.url);
        chunk.live += 1;
        if len > OWN_CHUNK_OVER {
            self.publish(number, len);
        } else {
            self.current = Some((number, offset + len));
            if publish {
                self.publish(number, offset + len);
            }
        }
        let at = number
            .checked_mul(1 << OFFSET_BITS)
            .expect("fewer than 2^18 arena chunks per shard");
        (at | offset as u32, len16)
    }

    fn new_chunk(&mut self, cap: usize) -> u32 {
        let buf = ChunkBuf::new(cap);
        let chunk = Chunk {
            base: buf.ptr.as_ptr(),
            buf: Some(buf),
            shared: Bytes::new(),
            live: 0,
        };
        match self.free.pop() {
            Some(number) => {
                self.chunks[number as usize] = chunk;
                number
            }
            None => {
                self.chunks.push(chunk);
                u32::try_from(self.chunks.len() - 1).expect("chunk numbers fit u32")
            }
        }
    }

    fn publish(&mut self, number: u32, end: usize) {
        let chunk = &mut self.chunks[number as usize];
        if chunk.shared.len() != end {
            let buf = chunk.buf.clone().expect("a published chunk is allocated");
            chunk.shared = Bytes::from_owner(Written(buf, end));
        }
    }

    fn publish_all(&mut self) {
        if let Some((number, end)) = self.current {
            self.publish(number, end);
        }
    }

    /// One entry of chunk `number` is gone.
    fn unlink(&mut self, number: usize) {
        let chunk = &mut self.chunks[number];
        chunk.live -= 1;
        let current = self.current.is_some_and(|(c, _)| c as usize == number);
        if chunk.live == 0 && !current {
            self.release(number as u32);
        }
    }

    fn release(&mut self, number: u32) {
        let chunk = &mut self.chunks[number as usize];
        chunk.base = std::ptr::null();
        chunk.buf = None;
        chunk.shared = Bytes::new();
        self.free.push(number);
    }
}

#[repr(align(128))]
struct Padded<T>(T);

#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    slots: Vec<Entry>,
    records: Records,
}

impl Shard {
    #[inline]
    fn code_of<'a>(chunks: &'a [Chunk], entry: &'a Entry) -> &'a [u8] {
        chunk_of(chunks, entry).code(entry)
    }

    /// The entry in slot `i`, a number the table holds.
    #[inline]
    fn slot(&self, i: u32) -> &Entry {
        debug_assert!((i as usize) < self.slots.len());
        // SAFETY: the table holds only slot numbers below `slots.len()` (kept in step by
        // `push_unique` and `remove_if`).
        unsafe { self.slots.get_unchecked(i as usize) }
    }

    #[inline]
    fn position(&self, hash: u64, code: &[u8]) -> Option<usize> {
        let chunks = &self.records.chunks[..];
        self.table
            .find(hash, |&i| Self::code_of(chunks, self.slot(i)) == code)
            .map(|&i| i as usize)
    }

    /// Writes the record and makes the entry (not yet indexed).
    fn make(&mut self, new: &NewEntry<'_>, publish: bool) -> Entry {
        let code = u8::try_from(new.code.len())
            .ok()
            .filter(|&n| n > 0 && n < HAS_EXPIRY)
            .expect("codes are 1 to 64 bytes");
        let created = u32::try_from(new.created_at)
            .ok()
            .filter(|&t| t != WIDE_TIME)
            .unwrap_or(WIDE_TIME);
        let (at, len) = self.records.push(new, created, publish);
        Entry {
            clicks: AtomicU64::new(new.clicks),
            at,
            owner: new.owner,
            created,
            len,
            code: code
                | if new.expires_at != NEVER {
                    HAS_EXPIRY
                } else {
                    0
                },
            dirty: AtomicBool::new(false),
        }
    }

    fn insert(
        &mut self,
        hash: u64,
        new: &NewEntry<'_>,
        hasher: &DefaultHashBuilder,
    ) -> Option<Entry> {
        let entry = self.make(new, true);
        if let Some(i) = self.position(hash, new.code) {
            let old = std::mem::replace(&mut self.slots[i], entry);
            return Some(self.removed(old));
        }
        self.push_unique(hash, entry, hasher);
        None
    }

    fn push_unique(&mut self, hash: u64, entry: Entry, hasher: &DefaultHashBuilder) {
        let idx = u32::try_from(self.slots.len()).expect("fewer than 2^32 links per shard");
        self.slots.push(entry);
        let (slots, chunks) = (&self.slots, &self.records.chunks[..]);
        self.table.insert_unique(hash, idx, |&i| {
            hasher.hash_one(Self::code_of(chunks, &slots[i as usize]))
        });
    }

    fn remove_if(
        &mut self,
        hash: u64,
        code: &[u8],
        hasher: &DefaultHashBuilder,
        keep: impl FnOnce(&Link<'_>) -> bool,
    ) -> Option<Entry> {
        let (slots, chunks) = (&self.slots, &self.records.chunks[..]);
        let found = self
            .table
            .find_entry(hash, |&i| Self::code_of(chunks, &slots[i as usize]) == code)
            .ok()?;
        if keep(&Link::new(&slots[*found.get() as usize], chunks)) {
            return None;
        }
        let idx = found.remove().0 as usize;
        let last = self.slots.len() - 1;
        let removed = self.slots.swap_remove(idx);
        if idx != last {
            let moved = hasher.hash_one(Self::code_of(&self.records.chunks, &self.slots[idx]));
            let slot = self
                .table
                .find_mut(moved, |&i| i as usize == last)
                .expect("every slot is indexed");
            *slot = u32::try_from(idx).expect("slot index fits u32");
        }
        Some(self.removed(removed))
    }

    /// An entry taken out of the index: its record's chunk may go.
    fn removed(&mut self, entry: Entry) -> Entry {
        self.records.unlink(entry.chunk());
        entry
    }
}

pub(crate) struct Index {
    shards: Box<[Padded<RwLock<Shard>>]>,
    hasher: DefaultHashBuilder,
    len: AtomicUsize,
}

impl Index {
    pub(crate) fn with_capacity(links: usize) -> Self {
        let per_shard = if links == 0 {
            0
        } else {
            links / SHARDS + links / SHARDS / 8 + 16
        };
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(RwLock::new(Shard {
                    table: HashTable::with_capacity(per_shard),
                    slots: Vec::with_capacity(per_shard),
                    records: Records::default(),
                }))
            })
            .collect();
        Self {
            shards,
            hasher: DefaultHashBuilder::default(),
            len: AtomicUsize::new(0),
        }
    }

    fn hash(&self, code: &[u8]) -> u64 {
        self.hasher.hash_one(code)
    }

    /// Shard from the bits just below the top 7 (hashbrown uses the top 7 as tags and the
    /// low bits as bucket positions).
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[((hash << 7) >> (64 - SHARD_BITS)) as usize].0
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard> {
        self.shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard> {
        self.shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the link for `code` under the shard's read lock.
    pub(crate) fn with<R>(&self, code: &[u8], f: impl FnOnce(&Link<'_>) -> R) -> Option<R> {
        let hash = self.hash(code);
        let shard = self.read(hash);
        let i = shard.position(hash, code)?;
        Some(f(&Link::new(shard.slot(i as u32), &shard.records.chunks)))
    }

    /// Inserts or replaces; returns the replaced entry (its clicks; its record is gone).
    pub(crate) fn insert(&self, new: NewEntry<'_>) -> Option<Entry> {
        let hash = self.hash(new.code);
        let old = self.write(hash).insert(hash, &new, &self.hasher);
        if old.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        old
    }

    /// Insert of a code known to be absent (keys read from the links table), while the index
    /// is being built: [`Index::finish_load`] makes the records shareable and adds the count.
    pub(crate) fn insert_loaded(&self, new: &NewEntry<'_>) {
        let hash = self.hash(new.code);
        let mut shard = self.write(hash);
        let entry = shard.make(new, false);
        shard.push_unique(hash, entry, &self.hasher);
    }

    pub(crate) fn finish_load(&self, n: usize) {
        for shard in &self.shards {
            let mut shard = shard.0.write().unwrap_or_else(PoisonError::into_inner);
            shard.records.publish_all();
        }
        self.len.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, code: &[u8]) -> Option<Entry> {
        self.remove_unless(code, |_| false)
    }

    /// Removes the entry unless `keep` says otherwise (checked under the write lock).
    pub(crate) fn remove_unless(
        &self,
        code: &[u8],
        keep: impl FnOnce(&Link<'_>) -> bool,
    ) -> Option<Entry> {
        let hash = self.hash(code);
        let removed = self.write(hash).remove_if(hash, code, &self.hasher, keep);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Visits every link, one shard (read-locked) at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Link<'_>)) {
        for shard in &self.shards {
            let shard = shard.0.read().unwrap_or_else(PoisonError::into_inner);
            for entry in &shard.slots {
                f(&Link::new(entry, &shard.records.chunks));
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes held by the index's own structures, for the footprint breakdown:
    /// (entries in use, entry capacity, hash table buckets + control bytes, arena chunks).
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> (usize, usize, usize, usize) {
        let (mut used, mut reserved, mut table, mut arena) = (0, 0, 0, 0);
        for shard in &self.shards {
            let shard = shard.0.read().unwrap_or_else(PoisonError::into_inner);
            used += shard.slots.len() * size_of::<Entry>();
            reserved += shard.slots.capacity() * size_of::<Entry>();
            let cap = shard.table.capacity();
            if cap > 0 {
                let buckets = (cap + cap / 7).next_power_of_two();
                table += buckets * (size_of::<u32>() + 1) + 16;
            }
            arena += shard.records.chunks.capacity() * size_of::<Chunk>();
            arena += (shard.records.chunks.iter())
                .filter_map(|c| c.buf.as_ref().map(|b| b.cap))
                .sum::<usize>();
        }
        (used, reserved, table, arena)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(code: &'a str, url: &'a str) -> NewEntry<'a> {
        NewEntry::new(code.as_bytes(), url.as_bytes(), 1, NEVER, 0, 0)
    }

    #[test]
    fn entry_is_24_bytes() {
        assert_eq!(size_of::<Entry>(), 24);
    }

    #[test]
    fn insert_find_replace_remove() {
        let index = Index::with_capacity(0);
        for i in 0..5_000 {
            let code = format!("c{i}");
            let url = format!("https://example.com/{i}");
            assert!(index.insert(new(&code, &url)).is_none());
        }
        assert_eq!(index.len(), 5_000);
        assert_eq!(
            index.with(b"c42", |e| e.url_str().to_owned()).as_deref(),
            Some("https://example.com/42")
        );
        index.with(b"c42", |e| e.clicks.store(3, Ordering::Relaxed));
        let old = index.insert(new("c42", "https://example.org/new"));
        assert_eq!(old.map(|e| e.clicks.load(Ordering::Relaxed)), Some(3));
        assert_eq!(
            index.with(b"c42", |e| e.url_str().to_owned()).as_deref(),
            Some("https://example.org/new")
        );
        assert_eq!(index.len(), 5_000);
        for i in (0..5_000).step_by(2) {
            assert!(index.remove(format!("c{i}").as_bytes()).is_some(), "c{i}");
        }
        assert_eq!(index.len(), 2_500);
        for i in 0..5_000 {
            let found = index.with(format!("c{i}").as_bytes(), |e| {
                (e.code().to_vec(), e.url_str().to_owned())
            });
            assert_eq!(found.is_some(), i % 2 == 1, "c{i}");
            if let Some((code, url)) = found {
                assert_eq!(code, format!("c{i}").as_bytes());
                if i != 43 {
                    assert_eq!(url, format!("https://example.com/{i}"));
                }
            }
        }
        assert!(index.remove(b"missing").is_none());
        assert!(index.remove_unless(b"c1", |_| true).is_none());
        let mut n = 0;
        index.for_each(|_| n += 1);
        assert_eq!(n, 2_500);
    }

    #[test]
    fn times_round_trip_inline_and_wide() {
        let index = Index::with_capacity(0);
        let cases = [
            ("a", 0, NEVER),
            ("b", 1_700_000_000, 1_700_000_060),
            ("c", i64::from(u32::MAX) - 1, NEVER),
            ("d", i64::from(u32::MAX), i64::MAX - 1),
            ("e", -5, -1),
            ("f", i64::MIN, 0),
        ];
        for (code, created, expires) in cases {
            let url = format!("https://example.com/{code}");
            index.insert(NewEntry::new(
                code.as_bytes(),
                url.as_bytes(),
                created,
                expires,
                7,
                0,
            ));
        }
        for (code, created, expires) in cases {
            let got = index.with(code.as_bytes(), |e| {
                (
                    e.created_at,
                    e.expires_at,
                    e.owner,
                    e.code_str().to_owned(),
                    e.url_str().to_owned(),
                )
            });
            let url = format!("https://example.com/{code}");
            assert_eq!(
                got,
                Some((created, expires, 7, code.to_owned(), url)),
                "{code}"
            );
        }
        assert_eq!(
            index.with(b"b", |e| e.is_expired(1_700_000_059)),
            Some(false)
        );
        assert_eq!(
            index.with(b"b", |e| e.is_expired(1_700_000_060)),
            Some(true)
        );
        assert_eq!(index.with(b"a", |e| e.expires_at()), Some(None));
    }

    #[test]
    fn locations_share_the_arena_chunk() {
        let index = Index::with_capacity(0);
        index.insert(new("abc", "https://a/"));
        let a = index
            .with(b"abc", |e| (e.location(), e.code_bytes()))
            .unwrap();
        assert_eq!((&a.0[..], &a.1[..]), (&b"https://a/"[..], &b"abc"[..]));
        // The code is right before the URL in the same buffer.
        assert_eq!(a.1.as_ptr() as usize + 3, a.0.as_ptr() as usize);
        let big = "x".repeat(5_000);
        index.insert(new("big", &big));
        assert_eq!(index.with(b"big", |e| e.location().len()), Some(5_000));
        // A location outlives the removal of its link.
        assert!(index.remove(b"abc").is_some());
        assert_eq!(&a.0[..], b"https://a/");
    }

    #[test]
    fn emptied_chunks_are_freed_and_reused() {
        let index = Index::with_capacity(0);
        let url = "u".repeat(1_000);
        let chunks = |index: &Index| {
            let mut n = 0;
            for shard in &index.shards {
                let shard = shard.0.read().unwrap();
                n += shard
                    .records
                    .chunks
                    .iter()
                    .filter(|c| c.buf.is_some())
                    .count();
            }
            n
        };
        for i in 0..4_000 {
            index.insert(new(&format!("c{i}"), &url));
        }
        let full = chunks(&index);
        assert!(full >= 4_000 * 1_000 / CHUNK, "{full}");
        for i in 0..4_000 {
            assert!(index.remove(format!("c{i}").as_bytes()).is_some());
        }
        // Only each shard's current chunk stays.
        assert!(chunks(&index) <= SHARDS, "{}", chunks(&index));
        for i in 0..4_000 {
            index.insert(new(&format!("d{i}"), &url));
        }
        assert!(chunks(&index) <= full + SHARDS, "{}", chunks(&index));
        assert_eq!(index.with(b"d3999", |e| e.url().len()), Some(1_000));
    }

    #[test]
    fn loaded_entries_are_shared_after_finish_load() {
        let index = Index::with_capacity(3_000);
        for i in 0..3_000 {
            let (code, url) = (format!("c{i}"), format!("https://example.com/{i}"));
            index.insert_loaded(&new(&code, &url));
        }
        index.finish_load(3_000);
        assert_eq!(index.len(), 3_000);
        for i in 0..3_000 {
            let location = index.with(format!("c{i}").as_bytes(), |e| e.location());
            assert_eq!(
                location.as_deref(),
                Some(format!("https://example.com/{i}").as_bytes())
            );
        }
    }
}
