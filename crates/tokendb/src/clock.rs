//! Clocks: the system clock (the only place tokendb reads wall time) and a manual one for
//! tests, both from `tokendb-core`.

pub use tokendb_core::time::{Clock, ManualClock, SystemClock};
