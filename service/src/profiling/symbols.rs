//! Addresses to function names, in the process itself: user addresses through the `backtrace`
//! crate (the symbol tables of the loaded objects), kernel addresses through `/proc/kallsyms`
//! (real addresses only for root or `CAP_SYSLOG`), marked with inferno's `_[k]` suffix.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Arc;

/// Addresses at or above this are the kernel's (x86-64 and arm64 with 48-bit addresses).
pub(crate) const KERNEL_START: u64 = 0xffff_8000_0000_0000;

pub(crate) struct Symbolizer {
    cache: HashMap<u64, Arc<[Arc<str>]>>,
    names: HashMap<String, Arc<str>>,
    kernel: Option<Option<Kallsyms>>,
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        Self {
            cache: HashMap::new(),
            names: HashMap::new(),
            kernel: None,
        }
    }

    /// The function at `addr` (one name; a slice so that inlined frames could join it).
    pub(crate) fn frames(&mut self, addr: u64) -> Arc<[Arc<str>]> {
        if let Some(f) = self.cache.get(&addr) {
            return Arc::clone(f);
        }
        let names = if addr >= KERNEL_START {
            let name = match self.kernel.get_or_insert_with(Kallsyms::load) {
                Some(k) => k.name(addr).unwrap_or("[kernel]"),
                None => "[kernel]",
            };
            vec![format!("{name}_[k]")]
        } else {
            user(addr)
        };
        let frames: Arc<[Arc<str>]> = names.into_iter().map(|n| self.intern(n)).collect();
        self.cache.insert(addr, Arc::clone(&frames));
        frames
    }

    fn intern(&mut self, name: String) -> Arc<str> {
        // `;` separates frames in folded stacks: Rust names such as `[u8; 8]` must not split.
        let name = if name.contains(';') {
            name.replace(';', ",")
        } else {
            name
        };
        if let Some(n) = self.names.get(&name) {
            return Arc::clone(n);
        }
        let n: Arc<str> = name.as_str().into();
        self.names.insert(name, Arc::clone(&n));
        n
    }
}

/// The function holding `addr`, by its symbol-table name (the full path, as perf shows it).
/// Frames inlined into it are left out: `line-tables-only` debug information names them without
/// their module path (`run`, `poll<...>`, `{closure#0}`), and so does it name whole functions,
/// which is why the executable's own symbol table comes first.
fn user(addr: u64) -> Vec<String> {
    if let Some(name) = EXE
        .get_or_init(ExeSymbols::load)
        .as_ref()
        .and_then(|e| e.name(addr))
    {
        return vec![name.to_string()];
    }
    let mut names = Vec::new();
    // `resolve` looks up the address minus one (it expects return addresses); ours are already
    // inside the instruction they stand for.
    let adjusted = (addr as usize).wrapping_add(1) as *mut std::ffi::c_void;
    backtrace::resolve(adjusted, |symbol| {
        if let Some(name) = symbol.name() {
            // `{:#}`: demangled without the hash suffix.
            names.push(format!("{name:#}"));
        }
    });
    // `resolve` reports the inlined frames first and the function that holds them last.
    vec![names.pop().unwrap_or_else(|| dladdr(addr))]
}

/// Function symbols of the running executable (`.symtab`), demangled; read once per process.
static EXE: std::sync::OnceLock<Option<ExeSymbols>> = std::sync::OnceLock::new();

struct ExeSymbols {
    /// Load address minus link-time address (position-independent executables).
    bias: u64,
    /// `(start, end, name)`, sorted by start.
    functions: Vec<(u64, u64, Box<str>)>,
}

impl ExeSymbols {
    fn load() -> Option<Self> {
        use object::{Object as _, ObjectSymbol as _};
        let data = std::fs::read("/proc/self/exe").ok()?;
        let file = object::File::parse(data.as_slice()).ok()?;
        let mut functions: Vec<(u64, u64, Box<str>)> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some((s.address(), s.address() + s.size(), name.into_boxed_str()))
            })
            .collect();
        if functions.is_empty() {
            return None;
        }
        functions.sort_unstable_by_key(|f| f.0);
        Some(Self {
            bias: main_program_bias()?,
            functions,
        })
    }

    fn name(&self, addr: u64) -> Option<&str> {
        let addr = addr.checked_sub(self.bias)?;
        let i = self
            .functions
            .partition_point(|f| f.0 <= addr)
            .checked_sub(1)?;
        let (_, end, name) = &self.functions[i];
        (addr < *end).then_some(&**name)
    }
}

/// The main program's load bias, from the first object `dl_iterate_phdr` reports.
fn main_program_bias() -> Option<u64> {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `info` is valid for the call and `out` is the `Option<u64>` passed below.
        unsafe { *out.cast::<Option<u64>>() = Some((*info).dlpi_addr) };
        1
    }
    let mut bias: Option<u64> = None;
    // SAFETY: the callback writes only through the pointer to `bias`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut bias).cast()) };
    bias
}

/// The nearest exported symbol, else `[object file name]`.
fn dladdr(addr: u64) -> String {
    // SAFETY: a zeroed Dl_info is valid; dladdr fills it and its strings live as long as the
    // object stays loaded (we copy them at once).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr as usize as *const libc::c_void, &mut info) == 0 {
            return "[unknown]".into();
        }
        if !info.dli_sname.is_null() {
            return CStr::from_ptr(info.dli_sname)
                .to_string_lossy()
                .into_owned();
        }
        if !info.dli_fname.is_null() {
            let path = CStr::from_ptr(info.dli_fname).to_string_lossy();
            return format!("[{}]", path.rsplit('/').next().unwrap_or(&path));
        }
    }
    "[unknown]".into()
}

/// Text symbols of the running kernel, sorted by address.
struct Kallsyms {
    addrs: Vec<u64>,
    names: Vec<Box<str>>,
}

impl Kallsyms {
    /// `None` when unreadable or when the addresses are hidden (all zero: `kptr_restrict`).
    fn load() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
        let mut symbols: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                matches!(kind, "t" | "T" | "w" | "W").then_some((addr, name))
            })
            .filter(|&(addr, _)| addr != 0)
            .collect();
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_by_key(|&(addr, _)| addr);
        Some(Self {
            addrs: symbols.iter().map(|&(a, _)| a).collect(),
            names: symbols.iter().map(|&(_, n)| n.into()).collect(),
        })
    }

    fn name(&self, addr: u64) -> Option<&str> {
        let i = self.addrs.partition_point(|&a| a <= addr).checked_sub(1)?;
        Some(&self.names[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn user_addresses_resolve_to_rust_names() {
        let mut s = Symbolizer::new();
        let addr = a_function_to_find as *const () as u64;
        let frames = s.frames(addr);
        assert!(
            frames.iter().any(|f| f.contains("a_function_to_find")),
            "{frames:?}"
        );
        assert!(Arc::ptr_eq(&frames, &s.frames(addr)), "cached");
        let getpid = libc::getpid as *const () as u64;
        assert!(s.frames(getpid).iter().any(|f| f.contains("getpid")));
    }

    #[test]
    fn kernel_addresses_are_marked() {
        let mut s = Symbolizer::new();
        let frames = s.frames(0xffff_ffff_8100_0010);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].ends_with("_[k]"), "{frames:?}");
    }
}
