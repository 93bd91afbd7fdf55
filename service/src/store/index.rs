//! The in-memory index: the authoritative read path for redirects.
//!
//! Layout, chosen for RSS per link (DESIGN: <= 256 B at 1M links):
//! - 64 shards, each an `RwLock` over a dense `Vec<Entry>` (64 bytes per link) and a
//!   `hashbrown::HashTable<u32>` of slot numbers (4 bytes per bucket + 1 control byte).
//!   A `DashMap<CompactString, Entry>` stores key and value in every bucket; hashbrown keeps
//!   at most 7/8 of its buckets full and doubles, so at 1M links it holds 2^21 buckets of
//!   112 bytes where this table holds 2^21 buckets of 5 bytes. Measured at 1M links with
//!   ~60-byte URLs (`store_1m_*` tests): ~380 B/link for the DashMap layout, ~155 B/link here.
//! - Code and URL of a link live in one `Bytes` slice of a shared 16 KiB arena chunk: no
//!   per-link allocation, no allocator rounding, and cloning it (for a redirect or the
//!   dirty list) is a reference-count increment, never an allocation. Trade-off: a chunk
//!   is freed only when every link in it is gone, so deleted links' bytes linger until then.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use hashbrown::{DefaultHashBuilder, HashTable};

/// `expires_at` of a link that never expires.
pub(crate) const NEVER: i64 = i64::MAX;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// One link as the redirect path sees it.
pub(crate) struct Entry {
    /// The code followed by the normalised URL.
    data: Bytes,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) clicks: AtomicU64,
    pub(crate) owner: u32,
    code_len: u8,
    pub(crate) dirty: AtomicBool,
}

impl Entry {
    /// `data` must be `code ++ url` with `code_len` = the code's length.
    pub(crate) fn new(
        data: Bytes,
        code_len: usize,
        created_at: i64,
        expires_at: i64,
        owner: u32,
        clicks: u64,
    ) -> Self {
        debug_assert!(code_len > 0 && code_len < data.len());
        Self {
            data,
            created_at,
            expires_at,
            clicks: AtomicU64::new(clicks),
            owner,
            code_len: u8::try_from(code_len).expect("codes are at most 64 bytes"),
            dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn code(&self) -> &[u8] {
        &self.data[..usize::from(self.code_len)]
    }

    pub(crate) fn code_str(&self) -> &str {
        std::str::from_utf8(self.code()).unwrap_or_default()
    }

    pub(crate) fn url(&self) -> &[u8] {
        &self.data[usize::from(self.code_len)..]
    }

    pub(crate) fn url_str(&self) -> &str {
        std::str::from_utf8(self.url()).unwrap_or_default()
    }

    /// The `Location` value, sharing this entry's buffer (no allocation).
    pub(crate) fn location(&self) -> Bytes {
        self.data.slice(usize::from(self.code_len)..)
    }

    /// The code, sharing this entry's buffer (no allocation); the dirty list holds these.
    pub(crate) fn code_bytes(&self) -> Bytes {
        self.data.slice(..usize::from(self.code_len))
    }

    pub(crate) fn is_expired(&self, now: i64) -> bool {
        self.expires_at != NEVER && now >= self.expires_at
    }

    pub(crate) fn expires_at(&self) -> Option<i64> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }
}

/// Where code ++ url buffers come from: slices of shared chunks.
pub(crate) struct Arena {
    chunk: BytesMut,
}

impl Arena {
    const CHUNK: usize = 16 * 1024;
    /// Records larger than this get a buffer of their own, so a chunk wastes little.
    const OWN_BUFFER_OVER: usize = Self::CHUNK / 8;

    pub(crate) fn new() -> Self {
        Self {
            chunk: BytesMut::new(),
        }
    }

    /// `code ++ url` in a buffer whose clones never allocate.
    pub(crate) fn alloc(&mut self, code: &[u8], url: &[u8]) -> Bytes {
        let len = code.len() + url.len();
        if len > Self::OWN_BUFFER_OVER {
            let mut own = BytesMut::with_capacity(len);
            own.extend_from_slice(code);
            own.extend_from_slice(url);
            // `split` turns the buffer into a shared one now (one small allocation), so
            // later clones are reference-count increments, unlike `Bytes::from(Vec)`.
            return own.split().freeze();
        }
        if self.chunk.capacity() - self.chunk.len() < len {
            self.chunk = BytesMut::with_capacity(Self::CHUNK);
        }
        self.chunk.extend_from_slice(code);
        self.chunk.extend_from_slice(url);
        self.chunk.split().freeze()
    }
}

#[repr(align(128))]
struct Padded<T>(T);

#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    slots: Vec<Entry>,
}

impl Shard {
    fn find(&self, hash: u64, code: &[u8]) -> Option<&Entry> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| slots[i as usize].code() == code)
            .map(|&i| &slots[i as usize])
    }

    fn insert(&mut self, hash: u64, entry: Entry, hasher: &DefaultHashBuilder) -> Option<Entry> {
        let slots = &mut self.slots;
        let code = entry.code();
        if let Some(&i) = self.table.find(hash, |&i| slots[i as usize].code() == code) {
            return Some(std::mem::replace(&mut slots[i as usize], entry));
        }
        let idx = u32::try_from(slots.len()).expect("fewer than 2^32 links per shard");
        slots.push(entry);
        let slots = &self.slots;
        self.table
            .insert_unique(hash, idx, |&i| hasher.hash_one(slots[i as usize].code()));
        None
    }

    fn remove_if(
        &mut self,
        hash: u64,
        code: &[u8],
        hasher: &DefaultHashBuilder,
        keep: impl FnOnce(&Entry) -> bool,
    ) -> Option<Entry> {
        let slots = &self.slots;
        let found = self
            .table
            .find_entry(hash, |&i| slots[i as usize].code() == code)
            .ok()?;
        if keep(&slots[*found.get() as usize]) {
            return None;
        }
        let idx = found.remove().0 as usize;
        let last = self.slots.len() - 1;
        let removed = self.slots.swap_remove(idx);
        if idx != last {
            let moved = hasher.hash_one(self.slots[idx].code());
            let slot = self
                .table
                .find_mut(moved, |&i| i as usize == last)
                .expect("every slot is indexed");
            *slot = u32::try_from(idx).expect("slot index fits u32");
        }
        Some(removed)
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

    /// Runs `f` on the entry for `code` under the shard's read lock.
    pub(crate) fn with<R>(&self, code: &[u8], f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let hash = self.hash(code);
        self.read(hash).find(hash, code).map(f)
    }

    /// Inserts or replaces; returns the replaced entry.
    pub(crate) fn insert(&self, entry: Entry) -> Option<Entry> {
        let hash = self.hash(entry.code());
        let old = self.write(hash).insert(hash, entry, &self.hasher);
        if old.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        old
    }

    /// Insert of a code known to be absent (keys read from the links table), while the index
    /// is being built: the length is added afterwards with [`Index::add_loaded`].
    pub(crate) fn insert_loaded(&self, entry: Entry) {
        let hash = self.hash(entry.code());
        let mut shard = self.write(hash);
        let shard = &mut *shard;
        let idx = u32::try_from(shard.slots.len()).expect("fewer than 2^32 links per shard");
        shard.slots.push(entry);
        let slots = &shard.slots;
        shard.table.insert_unique(hash, idx, |&i| {
            self.hasher.hash_one(slots[i as usize].code())
        });
    }

    pub(crate) fn add_loaded(&self, n: usize) {
        self.len.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, code: &[u8]) -> Option<Entry> {
        self.remove_unless(code, |_| false)
    }

    /// Removes the entry unless `keep` says otherwise (checked under the write lock).
    pub(crate) fn remove_unless(
        &self,
        code: &[u8],
        keep: impl FnOnce(&Entry) -> bool,
    ) -> Option<Entry> {
        let hash = self.hash(code);
        let removed = self.write(hash).remove_if(hash, code, &self.hasher, keep);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Visits every entry, one shard (read-locked) at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Entry)) {
        for shard in &self.shards {
            let shard = shard.0.read().unwrap_or_else(PoisonError::into_inner);
            shard.slots.iter().for_each(&mut f);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arena: &mut Arena, code: &str, url: &str) -> Entry {
        Entry::new(
            arena.alloc(code.as_bytes(), url.as_bytes()),
            code.len(),
            1,
            NEVER,
            0,
            0,
        )
    }

    #[test]
    fn entry_is_64_bytes() {
        assert_eq!(size_of::<Entry>(), 64);
    }

    #[test]
    fn insert_find_replace_remove() {
        let mut arena = Arena::new();
        let index = Index::with_capacity(0);
        for i in 0..5_000 {
            let code = format!("c{i}");
            let url = format!("https://example.com/{i}");
            assert!(index.insert(entry(&mut arena, &code, &url)).is_none());
        }
        assert_eq!(index.len(), 5_000);
        assert_eq!(
            index.with(b"c42", |e| e.url_str().to_owned()).as_deref(),
            Some("https://example.com/42")
        );
        let old = index.insert(entry(&mut arena, "c42", "https://example.org/new"));
        assert_eq!(
            old.map(|e| e.url_str().to_owned()).as_deref(),
            Some("https://example.com/42")
        );
        assert_eq!(index.len(), 5_000);
        for i in (0..5_000).step_by(2) {
            assert!(index.remove(format!("c{i}").as_bytes()).is_some(), "c{i}");
        }
        assert_eq!(index.len(), 2_500);
        for i in 0..5_000 {
            let found = index.with(format!("c{i}").as_bytes(), |e| e.code().to_vec());
            assert_eq!(found.is_some(), i % 2 == 1, "c{i}");
            if let Some(code) = found {
                assert_eq!(code, format!("c{i}").as_bytes());
            }
        }
        assert!(index.remove(b"missing").is_none());
        assert!(index.remove_unless(b"c1", |_| true).is_none());
        let mut n = 0;
        index.for_each(|_| n += 1);
        assert_eq!(n, 2_500);
    }

    #[test]
    fn arena_buffers_are_shared_and_exact() {
        let mut arena = Arena::new();
        let a = arena.alloc(b"abc", b"https://a/");
        let b = arena.alloc(b"de", b"https://b/");
        assert_eq!(&a[..], b"abchttps://a/");
        assert_eq!(&b[..], b"dehttps://b/");
        // Both slices come from the same chunk.
        assert_eq!(a.as_ptr() as usize + a.len(), b.as_ptr() as usize);
        let big = vec![b'x'; 5_000];
        let c = arena.alloc(b"big", &big);
        assert_eq!(c.len(), 5_003);
    }
}
