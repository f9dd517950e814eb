//! The in-switch cache baseline (NetCache-style): the switch answers reads of hot keys from
//! values it holds itself; writes go home and the cached copy follows them. Plain rules over
//! plain values, called by the XDP program (`pegasus_cache`) under an entry's lock, and by the
//! tests. docs/cache.md tells the whole design; the rules in short:
//!
//! - A write to a cached key, on its way home, leaves its value in the entry as *pending*,
//!   with its version (the newest such write's).
//! - A write completes when its reply crosses the switch: a write reply whose version is the
//!   pending one makes the pending value the cached one (home has applied it).
//! - Any other reply newer than every version the entry has seen answered (its *floor*)
//!   makes the entry follow it: a read reply's value is cached; a write reply, whose value
//!   the switch does not have, invalidates (reads go home until a read reply fills it).
//!   Replies older than the floor change nothing.
//! - A new entry is *filling*: replies of reads that clients sent before the entry existed
//!   may be older than writes that completed before it existed (the switch saw neither), so
//!   only the controller's own read of home, sent after the entry was created, fills it (or
//!   a write reply carrying the pending version, as above). Clients' read replies still
//!   raise its floor: the controller's read, if older than what a client has read meanwhile,
//!   must not fill it (the controller then reads again).
//!
//! Together: a cached value is one home has applied, at least as new as every version a
//! client has been answered with (every answer crosses the switch, which moves the entry on
//! first). A write in flight does not stop the cache: until its reply crosses, it has not
//! completed, and the value before it is still a valid answer. So a read served by the switch
//! returns what home would return, never a stale value; and an invalid entry always refills,
//! since home holds at least the floor.

/// Largest value the cache holds (NetCache caps values by the switch's register width; 128
/// bytes is its prototype's limit). Longer values are served by home.
pub const CACHE_VALUE_MAX: usize = 128;

/// The server id a switch puts in the replies it answers itself.
pub const SWITCH_SERVER_ID: u8 = 0xff;

/// Where an entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CacheState {
    /// New: waiting for the controller's read of home (or a write's reply) to fill it.
    Filling = 0,
    /// No value to serve: reads go home.
    Invalid = 1,
    /// `version`'s value is cached: reads are answered by the switch.
    Valid = 2,
}

impl CacheState {
    /// Decodes a state byte; unknown codes read as `Invalid` (never served).
    #[inline(always)]
    pub const fn from_u8(code: u8) -> CacheState {
        match code {
            0 => CacheState::Filling,
            2 => CacheState::Valid,
            _ => CacheState::Invalid,
        }
    }
}

/// What the rules know of an entry: everything but the value bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMeta {
    pub state: CacheState,
    /// The cached value's version (meaningful when `Valid`).
    pub version: u64,
    /// The newest version of the replies the entry has seen (clients may have been answered
    /// with it): no older value may be cached.
    pub floor: u64,
    /// The newest write that crossed to home since the entry exists, and whether its value
    /// fits the cache (`pending_fits`); 0 when none.
    pub pending_version: u64,
    pub pending_fits: bool,
}

/// What a reply does to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEffect {
    /// Nothing: older than what the entry has seen, or already its value.
    Ignore,
    /// The pending value becomes the cached one (a write reply).
    Validate,
    /// The reply's own value becomes the cached one (a read reply).
    Fill,
    /// The entry stops serving reads until a newer value reaches it.
    Invalidate,
}

impl CacheMeta {
    /// A new entry.
    pub const NEW: CacheMeta = CacheMeta {
        state: CacheState::Filling,
        version: 0,
        floor: 0,
        pending_version: 0,
        pending_fits: false,
    };

    /// Whether a read is answered by the switch.
    #[inline(always)]
    pub const fn serves_reads(&self) -> bool {
        matches!(self.state, CacheState::Valid)
    }

    /// A write of `version` (stamped by the switch) crosses to home; `fits` says whether its
    /// value fits the cache. Returns true when its value must be kept as the pending one.
    /// Reads go on being answered: the write has not completed.
    #[inline(always)]
    pub fn on_write(&mut self, version: u64, fits: bool) -> bool {
        if version < self.pending_version {
            return false; // a newer write already crossed (they raced across CPUs)
        }
        self.pending_version = version;
        self.pending_fits = fits;
        fits
    }

    /// A write reply: home holds `version` now.
    #[inline(always)]
    pub fn on_write_reply(&mut self, version: u64) -> ReplyEffect {
        if version < self.floor || (self.serves_reads() && version == self.version) {
            return ReplyEffect::Ignore;
        }
        self.floor = version;
        if version == self.pending_version && self.pending_fits {
            self.state = CacheState::Valid;
            self.version = version;
            ReplyEffect::Validate
        } else {
            // A write the switch has no value for (one that crossed before the entry existed,
            // or too long to cache).
            if self.state == CacheState::Valid {
                self.state = CacheState::Invalid;
            }
            ReplyEffect::Invalidate
        }
    }

    /// A read reply: home holds `version`, whose value `fits` the cache or not;
    /// `from_controller` when it answers the controller's read of a new entry.
    #[inline(always)]
    pub fn on_read_reply(
        &mut self,
        version: u64,
        fits: bool,
        from_controller: bool,
    ) -> ReplyEffect {
        if self.state == CacheState::Filling && !from_controller {
            // Not a fill (the client may have sent it before the entry existed), but what it
            // read may be newer than the controller's read: that one must not fill then.
            if self.floor < version {
                self.floor = version;
            }
            return ReplyEffect::Ignore;
        }
        if version < self.floor || (self.serves_reads() && version == self.version) {
            return ReplyEffect::Ignore;
        }
        self.floor = version;
        if fits {
            self.state = CacheState::Valid;
            self.version = version;
            ReplyEffect::Fill
        } else {
            self.state = CacheState::Invalid;
            ReplyEffect::Invalidate
        }
    }
}

/// One cached key: the value of `pegasus_cache`'s `CACHE` map. Written by user space only
/// when the key is added; afterwards only the XDP program changes it, under `lock`, with
/// `seq` odd while it does (readers copy the value without the lock and check `seq`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// Spin lock word: 0 free, 1 held.
    pub lock: u32,
    /// [`CacheState`] code.
    pub state: u8,
    /// [`CacheMeta::pending_fits`].
    pub pending_fits: u8,
    /// Length of `value`.
    pub value_len: u16,
    /// Seqlock counter: odd while the entry changes.
    pub seq: u64,
    pub version: u64,
    pub floor: u64,
    pub pending_version: u64,
    /// Length of `pending`.
    pub pending_len: u16,
    pub reserved: [u8; 6],
    /// Reads answered by the switch.
    pub hits: u64,
    pub value: [u8; CACHE_VALUE_MAX],
    pub pending: [u8; CACHE_VALUE_MAX],
}

impl CacheEntry {
    /// A new entry ([`CacheMeta::NEW`]).
    pub const fn new() -> CacheEntry {
        CacheEntry {
            lock: 0,
            state: CacheState::Filling as u8,
            pending_fits: 0,
            value_len: 0,
            seq: 0,
            version: 0,
            floor: 0,
            pending_version: 0,
            pending_len: 0,
            reserved: [0; 6],
            hits: 0,
            value: [0; CACHE_VALUE_MAX],
            pending: [0; CACHE_VALUE_MAX],
        }
    }

    /// The rules' view of the entry.
    #[inline(always)]
    pub const fn meta(&self) -> CacheMeta {
        CacheMeta {
            state: CacheState::from_u8(self.state),
            version: self.version,
            floor: self.floor,
            pending_version: self.pending_version,
            pending_fits: self.pending_fits != 0,
        }
    }

    /// Writes the rules' view back.
    #[inline(always)]
    pub fn set_meta(&mut self, meta: CacheMeta) {
        self.state = meta.state as u8;
        self.version = meta.version;
        self.floor = meta.floor;
        self.pending_version = meta.pending_version;
        self.pending_fits = meta.pending_fits as u8;
    }

    /// The cached value, when the entry serves reads.
    pub fn cached_value(&self) -> Option<&[u8]> {
        let len = self.value_len as usize;
        (self.meta().serves_reads() && len <= CACHE_VALUE_MAX).then(|| &self.value[..len])
    }
}

impl Default for CacheEntry {
    fn default() -> Self {
        CacheEntry::new()
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for CacheEntry {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid(version: u64) -> CacheMeta {
        CacheMeta {
            state: CacheState::Valid,
            version,
            floor: version,
            pending_version: 0,
            pending_fits: false,
        }
    }

    #[test]
    fn a_new_entry_is_filled_by_the_controllers_read_only() {
        let mut m = CacheMeta::NEW;
        assert!(!m.serves_reads());
        assert_eq!(m.on_read_reply(5, true, false), ReplyEffect::Ignore);
        assert!(!m.serves_reads());
        assert_eq!(m.on_read_reply(5, true, true), ReplyEffect::Fill);
        assert!(m.serves_reads());
        assert_eq!(m.version, 5);
        // Once filled, any newer read reply moves it on.
        assert_eq!(m.on_read_reply(7, true, false), ReplyEffect::Fill);
        assert_eq!(m.version, 7);
        assert_eq!(m.on_read_reply(6, true, false), ReplyEffect::Ignore);
        assert_eq!(m.version, 7);
    }

    #[test]
    fn a_write_is_cached_when_its_reply_crosses() {
        let mut m = valid(5);
        assert!(m.on_write(9, true));
        // Not complete yet: the value before it is still answered.
        assert!(m.serves_reads());
        assert_eq!(m.version, 5);
        // A read that home answered before the write: nothing new.
        assert_eq!(m.on_read_reply(5, true, false), ReplyEffect::Ignore);
        assert_eq!(m.on_write_reply(9), ReplyEffect::Validate);
        assert!(m.serves_reads());
        assert_eq!(m.version, 9);
        // The same reply again (a duplicate) changes nothing; nor does an older one.
        assert_eq!(m.on_write_reply(9), ReplyEffect::Ignore);
        assert_eq!(m.on_read_reply(7, true, false), ReplyEffect::Ignore);
        assert_eq!(m.version, 9);
    }

    #[test]
    fn racing_writes_keep_the_newest_pending_value() {
        let mut m = valid(5);
        assert!(m.on_write(11, true));
        // An older stamp crossing later (another CPU): not kept.
        assert!(!m.on_write(10, true));
        assert_eq!(m.pending_version, 11);
        // Home answers the older one first: the switch has not its value.
        assert_eq!(m.on_write_reply(10), ReplyEffect::Invalidate);
        assert!(!m.serves_reads());
        assert_eq!(m.on_write_reply(11), ReplyEffect::Validate);
        assert_eq!(m.version, 11);
    }

    #[test]
    fn a_retried_write_never_leaves_the_entry_stuck() {
        // A write whose first attempt was applied (version 9) and whose retry, stamped 10, is
        // answered from home's deduplication table with 9: version 10 never exists.
        let mut m = valid(5);
        assert!(m.on_write(9, true));
        assert!(m.on_write(10, true));
        assert_eq!(m.on_write_reply(9), ReplyEffect::Invalidate);
        assert_eq!(m.on_read_reply(9, true, false), ReplyEffect::Fill);
        assert!(m.serves_reads());
    }

    #[test]
    fn a_value_too_long_to_cache_leaves_reads_at_home() {
        let mut m = valid(5);
        assert!(!m.on_write(9, false));
        assert_eq!(m.on_write_reply(9), ReplyEffect::Invalidate);
        assert!(!m.serves_reads());
        assert_eq!(m.on_read_reply(9, false, false), ReplyEffect::Invalidate);
        assert!(!m.serves_reads());
        // A later write that fits brings the cache back.
        assert!(m.on_write(12, true));
        assert_eq!(m.on_write_reply(12), ReplyEffect::Validate);
        assert!(m.serves_reads());
    }

    #[test]
    fn a_write_reply_the_switch_has_no_value_for_invalidates() {
        // A write that crossed before the entry existed, applied after it was filled.
        let mut m = valid(5);
        assert_eq!(m.on_write_reply(8), ReplyEffect::Invalidate);
        assert!(!m.serves_reads());
        assert_eq!(m.floor, 8);
        assert_eq!(m.on_read_reply(5, true, false), ReplyEffect::Ignore);
        assert_eq!(m.on_read_reply(8, true, false), ReplyEffect::Fill);
        assert!(m.serves_reads());
    }

    #[test]
    fn a_filling_entry_takes_a_write_that_crossed_after_it_existed() {
        let mut m = CacheMeta::NEW;
        assert!(m.on_write(20, true));
        assert_eq!(m.state, CacheState::Filling);
        assert_eq!(m.on_write_reply(20), ReplyEffect::Validate);
        assert!(m.serves_reads());
    }

    #[test]
    fn a_controller_read_older_than_a_clients_does_not_fill() {
        let mut m = CacheMeta::NEW;
        assert_eq!(m.on_read_reply(8, true, false), ReplyEffect::Ignore);
        assert_eq!(m.state, CacheState::Filling);
        assert_eq!(m.on_read_reply(7, true, true), ReplyEffect::Ignore);
        assert_eq!(m.state, CacheState::Filling);
        assert_eq!(m.on_read_reply(8, true, true), ReplyEffect::Fill);
        assert!(m.serves_reads());
    }

    #[test]
    fn unknown_state_codes_are_never_served() {
        for code in 3..=u8::MAX {
            assert_eq!(CacheState::from_u8(code), CacheState::Invalid);
        }
        let mut e = CacheEntry::new();
        e.state = 7;
        assert_eq!(e.cached_value(), None);
        e.set_meta(valid(3));
        e.value_len = 2;
        e.value[..2].copy_from_slice(b"ok");
        assert_eq!(e.cached_value(), Some(&b"ok"[..]));
    }

    /// One step of the model below.
    #[derive(Clone, Debug)]
    enum Step {
        /// A client writes (the value fits the cache or not).
        Write { fits: bool },
        /// A client retries a write home already applied: stamped anew, answered from home's
        /// deduplication table (with what home holds), never applied.
        Retry,
        /// A client reads: from the cache if it serves, else a read goes home.
        Read,
        /// The controller creates the entry and sends its read home.
        Install,
        /// Home serves the `n`-th request in flight (modulo their number).
        HomeServes(usize),
        /// The `n`-th reply in flight crosses the switch and completes.
        ReplyCrosses(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            any::<bool>().prop_map(|fits| Step::Write { fits }),
            Just(Step::Retry),
            Just(Step::Read),
            Just(Step::Install),
            any::<usize>().prop_map(Step::HomeServes),
            any::<usize>().prop_map(Step::ReplyCrosses),
        ]
    }

    #[derive(Clone, Copy, Debug)]
    enum Request {
        Write { version: u64 },
        Deduplicated,
        Read { controller: bool },
    }

    #[derive(Clone, Copy, Debug)]
    enum Reply {
        Write { version: u64 },
        Read { version: u64, controller: bool },
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// A model of one key: clients, home (which applies the newest version, serving its
        /// queue in any order), the switch's entry, and messages in flight in any order. A
        /// read the switch answers must return a version home has applied, and no older than
        /// any write or read that completed before it (linearizability for one register).
        #[test]
        fn the_cache_never_serves_a_stale_value(steps in prop::collection::vec(step(), 1..80)) {
            let mut next_version = 1u64;
            let mut home_held = 0u64;
            let mut entry: Option<CacheMeta> = None;
            let mut to_home: Vec<Request> = Vec::new();
            let mut to_client: Vec<Reply> = Vec::new();
            // The newest version any completed operation has returned or written.
            let mut completed = 0u64;
            for s in steps {
                match s {
                    Step::Write { fits } => {
                        let version = next_version;
                        next_version += 1;
                        if let Some(m) = &mut entry {
                            m.on_write(version, fits);
                        }
                        to_home.push(Request::Write { version });
                    }
                    Step::Retry => {
                        let version = next_version;
                        next_version += 1;
                        if let Some(m) = &mut entry {
                            m.on_write(version, true);
                        }
                        to_home.push(Request::Deduplicated);
                    }
                    Step::Read => match entry {
                        Some(m) if m.serves_reads() => {
                            prop_assert!(m.version >= completed, "stale: {} < {completed}", m.version);
                            prop_assert!(m.version <= home_held, "never applied at home");
                            completed = m.version;
                        }
                        _ => to_home.push(Request::Read { controller: false }),
                    },
                    Step::Install => {
                        if entry.is_none() {
                            entry = Some(CacheMeta::NEW);
                            to_home.push(Request::Read { controller: true });
                        }
                    }
                    Step::HomeServes(n) if !to_home.is_empty() => {
                        let request = to_home.remove(n % to_home.len());
                        to_client.push(match request {
                            Request::Write { version } => {
                                home_held = home_held.max(version);
                                Reply::Write { version: home_held }
                            }
                            Request::Deduplicated => Reply::Write { version: home_held },
                            Request::Read { controller } => {
                                Reply::Read { version: home_held, controller }
                            }
                        });
                    }
                    Step::ReplyCrosses(n) if !to_client.is_empty() => {
                        match to_client.remove(n % to_client.len()) {
                            Reply::Write { version } => {
                                if let Some(m) = &mut entry {
                                    m.on_write_reply(version);
                                }
                                completed = completed.max(version);
                            }
                            Reply::Read { version, controller } => {
                                if let Some(m) = &mut entry {
                                    // In the model every value fits unless a write said not.
                                    m.on_read_reply(version, true, controller);
                                }
                                if !controller {
                                    completed = completed.max(version);
                                }
                            }
                        }
                    }
                    Step::HomeServes(_) | Step::ReplyCrosses(_) => {}
                }
            }
            // Once everything in flight has landed, one read of home (the controller's, for
            // an entry still filling) makes the entry serve again: it is never stuck.
            if let Some(m) = &mut entry {
                for reply in to_home.drain(..).map(|request| match request {
                    Request::Write { version } => {
                        home_held = home_held.max(version);
                        Reply::Write { version: home_held }
                    }
                    Request::Deduplicated => Reply::Write { version: home_held },
                    Request::Read { controller } => Reply::Read { version: home_held, controller },
                }).chain(to_client.drain(..)).collect::<Vec<_>>() {
                    match reply {
                        Reply::Write { version } => {
                            m.on_write_reply(version);
                        }
                        Reply::Read { version, controller } => {
                            m.on_read_reply(version, true, controller);
                        }
                    }
                }
                if !m.serves_reads() {
                    let controller = m.state == CacheState::Filling;
                    m.on_read_reply(home_held, true, controller);
                }
                prop_assert!(m.serves_reads(), "stuck: {m:?}, home holds {home_held}");
                prop_assert_eq!(m.version, home_held);
            }
        }
    }
}
