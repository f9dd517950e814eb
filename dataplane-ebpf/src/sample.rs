//! Sampling requests for the controller's hot-key detection.

use crate::*;

/// Every `period`-th first attempt of a GET or PUT on this CPU goes to the controller: its key
/// hash and key, into the `SAMPLES` ring buffer.
#[inline(always)]
pub(crate) fn sample(ctx: &XdpContext, period: u16, op: Op, keyhash: u64, tally: Tally) {
    if period == 0 {
        return;
    }
    let Some(countdown) = SAMPLER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value: only this CPU touches it.
    unsafe {
        if *countdown > 1 {
            *countdown -= 1;
            return;
        }
        *countdown = period as u32;
    }
    const KEY_LEN_OFF: usize = PAYLOAD_OFF + wire::HEADER_LEN;
    let Some(key_len) = Bytes::<2>::at(ctx, KEY_LEN_OFF).map(|b| b.u16(0) as usize) else {
        return;
    };
    if key_len == 0 || key_len > wire::MAX_KEY_LEN {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<Sample>(0) else {
        tally.add(Counter::SamplesLost);
        return;
    };
    // The same length, in a form whose range the verifier can see (1..=256: LLVM folds the
    // two checks above into one unsigned comparison, which it cannot follow).
    const _: () = assert!(wire::MAX_KEY_LEN == 256);
    let copy_len = ((key_len as u32 - 1) & 0xff) + 1;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is the reserved ring buffer record, sized for a Sample; the key copy
    // is bounded by its `key` array (1..=MAX_KEY_LEN bytes, checked above).
    let copied = unsafe {
        (*record).keyhash = keyhash;
        (*record).key_len = key_len as u16;
        (*record).op = op as u8;
        (*record).reserved = [0; 5];
        // Short keys (YCSB's are 16 bytes) by direct loads from the packet, which cost a
        // fraction of the helper's call; the bytes past the key that come along are ignored
        // (the record says its length).
        let key = (*record).key.as_mut_ptr() as *mut u64;
        match Bytes::<16>::at(ctx, KEY_LEN_OFF + 2) {
            Some(bytes) if key_len <= 16 => {
                key.write_unaligned(bytes.load(0));
                key.add(1).write_unaligned(bytes.load(8));
                0
            }
            _ => bpf_xdp_load_bytes(
                ctx.ctx,
                (KEY_LEN_OFF + 2) as u32,
                (*record).key.as_mut_ptr() as *mut _,
                copy_len,
            ),
        }
    };
    if copied == 0 {
        // No wakeup: the controller reads the ring every epoch instead of waiting on it, and
        // a wakeup per sample would cost more than the sample itself.
        entry.submit(BPF_RB_NO_WAKEUP as u64);
        tally.add(Counter::Samples);
    } else {
        entry.discard(0); // a datagram shorter than its key length says
    }
}
