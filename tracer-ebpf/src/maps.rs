//! Maps shared by all programs: one ring buffer and per-hook counters.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::counter;

/// Every record goes through this one ring buffer. Userspace sizes it at load
/// (`--ringbuf-mib`, default `DEFAULT_RINGBUF_MIB` in tracer-user/src/kernel/loader.rs).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

/// Records produced per counter slot (`tracer_common::counter`).
#[map]
pub static SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::SLOTS, 0);

/// Records that could not be handed over (ring buffer full), per slot.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::SLOTS, 0);

#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, slot: u32) {
    if let Some(p) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}

/// Counts a record as produced, and as lost when `ok` is false.
#[inline(always)]
pub fn account(kind: u16, ok: bool) {
    let slot = counter::of_kind(kind);
    bump(&SEEN, slot);
    if !ok {
        bump(&LOST, slot);
    }
}
