//! Test fixtures: a database on a temp file driven by a manual clock.

use std::sync::Arc;
use tokendb::{Config, ConfigBuilder, ManualClock, MasterKey, SweeperConfig, TokenDb};

/// 2027-01-15T08:00:00Z: an arbitrary fixed start so tests never read the wall clock.
pub const T0: u64 = 1_800_000_000_000;
pub const MINUTE: u64 = 60_000;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = 24 * HOUR;

/// A database in a temp dir, a manual clock at [`T0`], and the master key.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub master: MasterKey,
    pub db: TokenDb,
}

impl Fixture {
    /// Default config, sweeper thread off (tests sweep by hand).
    pub fn new() -> Self {
        Self::with(|b| b)
    }

    /// Config from a builder tweak; the clock and a disabled background sweeper are set first.
    pub fn with(tweak: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let master = MasterKey::generate();
        let config = tweak(Self::base(&clock)).build().unwrap();
        let db = TokenDb::create(dir.path().join("tokens.tdb"), &master, config).unwrap();
        Self { dir, clock, master, db }
    }

    pub fn base(clock: &Arc<ManualClock>) -> ConfigBuilder {
        Config::builder().clock(clock.clone()).sweeper(SweeperConfig { enabled: false, ..SweeperConfig::default() })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("tokens.tdb")
    }

    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }
}
