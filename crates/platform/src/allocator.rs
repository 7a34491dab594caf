//! The allocator of every binary in the workspace (they all link this crate): mimalloc instead
//! of glibc's malloc. Requests allocate many small, short-lived buffers on many threads; in a
//! profile of the ingest path `malloc`, `free` and `malloc_consolidate` took about a sixth of the
//! embedded system's CPU time, and with mimalloc the saturated ingest rate rose by about a fifth.
//!
//! mimalloc's defaults on Linux keep freed memory committed (and resident) for a while, which
//! made the embedded system's peak RSS under load up to half again as large. Four options
//! change that: arenas and pages are committed as they are used (`arena_eager_commit` 0,
//! `page_commit_on_demand` 1), empty pages are not kept for reuse (`page_full_retain` 0) and
//! freed memory goes back to the kernel at once (`purge_delay` 0). They are set as defaults
//! before mimalloc starts, so the `MIMALLOC_*` environment variables of the same names still
//! override them.

use std::ffi::c_long;

use mimalloc::MiMalloc;

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Positions in mimalloc's `mi_option_e` (mimalloc.h) that libmimalloc-sys does not name.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PAGE_FULL_RETAIN: libmimalloc_sys::mi_option_t = 36;
const PAGE_COMMIT_ON_DEMAND: libmimalloc_sys::mi_option_t = 40;

/// Each option and the default this workspace gives it.
const DEFAULTS: [(libmimalloc_sys::mi_option_t, c_long); 4] =
    [(ARENA_EAGER_COMMIT, 0), (PURGE_DELAY, 0), (PAGE_FULL_RETAIN, 0), (PAGE_COMMIT_ON_DEMAND, 1)];

/// Runs from `.init_array` before `main`, and before mimalloc's own start-up constructor, since
/// numbered `.init_array` entries run before unnumbered ones. It lives beside the global
/// allocator so the linker keeps it wherever the allocator is linked.
#[used]
#[unsafe(link_section = ".init_array.00200")]
static SET_DEFAULTS: extern "C" fn() = set_defaults;

extern "C" fn set_defaults() {
    for (option, value) in DEFAULTS {
        // SAFETY: a plain setter of mimalloc's option table; it allocates nothing.
        unsafe { libmimalloc_sys::mi_option_set_default(option, value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_returning_defaults_are_in_effect() {
        for (option, value) in DEFAULTS {
            // SAFETY: reads mimalloc's option table.
            let in_effect = unsafe { libmimalloc_sys::mi_option_get(option) };
            // Run with the MIMALLOC_* variable of the option set otherwise, this fails: it overrides.
            assert_eq!(in_effect, value, "option {option}: the default was not set before mimalloc started");
        }
    }
}
