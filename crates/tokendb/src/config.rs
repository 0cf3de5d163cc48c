//! Configuration: a builder with documented defaults.

use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigProblem, Error, Result};
use std::sync::Arc;
use std::time::Duration;
use tokendb_core::TokenFormat;
use tokendb_rotation::{FamilyCap, MAX_GRACE_MS, Policy, RotationMode};
use tokendb_store::{StoreOptions, WriterOptions};
use tokendb_sweeper::SweeperConfig;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Settings of a [`crate::TokenDb`]. Build with [`Config::builder`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) format: TokenFormat,
    pub(crate) policy: Policy,
    pub(crate) access_ms: u64,
    pub(crate) cap: Option<FamilyCap>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether the application chose the clock (else a backend's own may decide).
    pub(crate) clock_chosen: bool,
    pub(crate) sweeper: SweeperConfig,
    pub(crate) store: StoreOptions,
    pub(crate) event_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            format: TokenFormat::default(),
            policy: Policy::default(),
            access_ms: 60 * 60 * 1000,
            cap: None,
            clock: Arc::new(SystemClock),
            clock_chosen: false,
            sweeper: SweeperConfig::default(),
            store: StoreOptions::default(),
            event_capacity: 1024,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
            errors: Vec::new(),
        }
    }

    /// The rotation policy in force.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The token prefix.
    #[must_use]
    pub fn token_prefix(&self) -> &str {
        self.format.prefix()
    }

    /// The redb page cache, in bytes, that opening a file of `file_len` bytes with this
    /// configuration gives: the size set with [`ConfigBuilder::cache_size`], else the default
    /// sized from the file (see there).
    ///
    /// ```
    /// let config = tokendb::Config::default();
    /// assert_eq!(config.cache_size_for(300 << 20), 1200 << 20);
    /// let fixed = tokendb::Config::builder().cache_size(64 << 20).build()?;
    /// assert_eq!(fixed.cache_size_for(550 << 20), 64 << 20);
    /// # Ok::<(), tokendb::Error>(())
    /// ```
    #[must_use]
    pub fn cache_size_for(&self, file_len: u64) -> usize {
        self.store.cache_size_for(file_len)
    }
}

/// Builds a [`Config`]. Every setting has a default, written on its method.
#[derive(Debug)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
    errors: Vec<ConfigProblem>,
}

impl ConfigBuilder {
    /// Token prefix: 1-16 of `a-z0-9`. Default `tdb` (tokens read `tdb_rt_…`, `tdb_at_…`).
    pub fn token_prefix(mut self, prefix: &str) -> Self {
        match TokenFormat::new(prefix) {
            Ok(f) => self.config.format = f,
            Err(e) => self.errors.push(ConfigProblem::TokenPrefix(e)),
        }
        self
    }

    /// Refresh-token family lifetimes: `absolute` from issue (never extended by rotation) and
    /// `idle` (inactivity; each use moves it, capped by the absolute). Default 90 days / 14 days.
    /// `Duration::MAX` means "never".
    pub fn refresh_lifetime(mut self, absolute: Duration, idle: Duration) -> Self {
        self.config.policy.absolute_ms = ms(absolute);
        self.config.policy.idle_ms = ms(idle);
        self
    }

    /// Access-token lifetime. Default 60 minutes. An access token tied to a family never
    /// outlives the family: it is capped at the family's deadline when issued.
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.access_ms = ms(lifetime);
        self
    }

    /// Grace period for a client retrying a rotation after a lost response: inside it, the
    /// immediate predecessor returns the same successor. Default 0 (off); at most 60 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.policy.grace_ms = ms(grace);
        self
    }

    /// Refresh tokens that do not rotate: every use returns the same token and slides its idle
    /// deadline, written at most once per `touch_granularity`. Weakens theft detection (a stolen
    /// token is never "reused"), hence the name. Default: one-time-only rotation.
    pub fn dangerous_non_rotating_refresh_tokens(mut self, touch_granularity: Duration) -> Self {
        self.config.policy.mode = RotationMode::ReUse {
            touch_granularity_ms: ms(touch_granularity),
        };
        self
    }

    /// Keep a sender-constrained family when one of its refresh tokens is presented without
    /// proof of its key or certificate: the presentation is still refused (and reported as
    /// [`crate::Event::ConfirmationMismatch`]), but the family stays usable by the key's holder.
    /// Default: such a presentation revokes the family and its access tokens, because the
    /// legitimate client always has the key, so whoever lacks it holds a stolen token. Keeping
    /// the family suits only clients that may lose their key and retry without it.
    pub fn dangerous_keep_family_on_confirmation_mismatch(mut self) -> Self {
        self.config.policy.revoke_on_confirmation_mismatch = false;
        self
    }

    /// Cap on live families per (subject, client): past it, issuing evicts the oldest family
    /// ([`FamilyCap::EvictOldest`]) or is refused ([`FamilyCap::Refuse`]). Default: no cap.
    pub fn family_cap(mut self, cap: Option<FamilyCap>) -> Self {
        self.config.cap = cap;
        self
    }

    /// Where time comes from. Default: [`SystemClock`] for a file; on PostgreSQL, the
    /// database server's clock, so that every replica decides deadlines by the same time.
    /// Tests use [`crate::ManualClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self.config.clock_chosen = true;
        self
    }

    /// Sweeper settings. Default: enabled, every 10 s, batches of 2,000, 1 s per pass.
    pub fn sweeper(mut self, sweeper: SweeperConfig) -> Self {
        self.config.sweeper = sweeper;
        self
    }

    /// Group-commit writer settings. Default: batches of up to 1,024 operations, no added wait.
    pub fn writer(mut self, writer: WriterOptions) -> Self {
        self.config.store.writer = writer;
        self
    }

    /// redb page cache size in bytes, fixed. Default: sized from the file at each open, four
    /// times its length, at least 256 MiB and at most 2 GiB
    /// ([`StoreOptions::cache_size_for`](tokendb_store::StoreOptions::cache_size_for)): a
    /// 1,000,000-token file (340-570 MB) is held whole even after it has grown fourfold, and
    /// memory is used only as pages are read. The size is chosen when the file is opened: a file created empty and then loaded
    /// with millions of tokens keeps 256 MiB until it is reopened, so set a size here if it
    /// will grow past about 500,000 tokens in one run. Ignored on PostgreSQL.
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.config.store.cache_size = Some(bytes);
        self
    }

    /// Persist redb's allocator state on every commit so a crashed database reopens without a
    /// full scan. Default on.
    pub fn quick_repair(mut self, on: bool) -> Self {
        self.config.store.quick_repair = on;
        self
    }

    /// Verify the checksum of every page of the file at open. A file that fails opens for
    /// lookups only and refuses writes (committing to a damaged file can abort the process;
    /// `docs/security.md`). Costs one read of the whole file per open (`docs/operations.md`
    /// has the figure). Default on.
    pub fn integrity_check_on_open(mut self, on: bool) -> Self {
        self.config.store.check_integrity_on_open = on;
        self
    }

    /// Capacity of each event subscriber's queue; events past it are dropped for that
    /// subscriber (a slow subscriber never blocks a rotation). Default 1,024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity.max(1);
        self
    }

    /// Checks and returns the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming every bad value.
    pub fn build(mut self) -> Result<Config> {
        if let Err(e) = self.config.policy.validate() {
            self.errors.push(ConfigProblem::Lifetime(e));
        }
        if self.config.policy.grace_ms > MAX_GRACE_MS {
            self.errors.push(ConfigProblem::OutOfRange {
                setting: "grace period",
                rule: "must be at most 60 s",
            });
        }
        if self.config.access_ms == 0 {
            self.errors.push(ConfigProblem::OutOfRange {
                setting: "access lifetime",
                rule: "must be greater than zero",
            });
        }
        if self.config.store.writer.max_batch == 0 {
            self.errors.push(ConfigProblem::OutOfRange {
                setting: "writer max_batch",
                rule: "must be at least 1",
            });
        }
        if self.config.sweeper.batch_size == 0 {
            self.errors.push(ConfigProblem::OutOfRange {
                setting: "sweeper batch_size",
                rule: "must be at least 1",
            });
        }
        if self.errors.is_empty() {
            Ok(self.config)
        } else {
            Err(Error::Config(self.errors))
        }
    }
}
