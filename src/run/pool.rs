//! The memory pool of a run under `--memory-limit`: DataFusion's fair spilling pool, except
//! that the consumers that can spill (sorts, aggregations, spilling joins) share only three
//! quarters of it. The last quarter is kept for the consumers that cannot spill (Parquet
//! writers' buffered row groups, the merge of sorted streams, hash tables of join build
//! sides): with `FairSpillPool`, spilling consumers may reserve the whole pool between them,
//! and a writer that grows after them fails with "Resources exhausted" although every other
//! consumer could have spilled.
//!
//! A repartition's buffers are never refused, and leave the others' shares as they are (they
//! are reported in what the pool holds). A refused repartition writes batches to a spill file that its reader
//! may then wait on forever when two input partitions spill at the same time: the query
//! neither ends nor fails (apache/datafusion#24883; reproduced in DataFusion 55.2 by a
//! grouped aggregation on two partitions under a 1 MB limit, about one run in twelve). Its
//! buffers are bounded without it: a repartition's senders wait while every output channel
//! holds a batch.

use datafusion::common::{Result, resources_datafusion_err};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, human_readable_size,
};
use std::sync::Mutex;

/// Spilling consumers leave `1 / HEADROOM` of the pool to the others.
const HEADROOM: usize = 4;

#[derive(Debug)]
pub struct HeadroomPool {
    size: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Registered consumers that can spill.
    spillers: usize,
    spillable: usize,
    unspillable: usize,
    /// Held by consumers that are always granted what they ask.
    granted: usize,
}

/// Whether `consumer` is always granted what it asks (see the module docs): a repartition's
/// output channels, named `RepartitionExec[n]` by DataFusion.
fn always_granted(consumer: &MemoryConsumer) -> bool {
    consumer.name().starts_with("RepartitionExec[")
}

/// Whether `consumer`'s memory counts as memory that can spill.
fn spills(consumer: &MemoryConsumer) -> bool {
    consumer.can_spill() && !always_granted(consumer)
}

impl HeadroomPool {
    pub fn new(size: usize) -> HeadroomPool {
        HeadroomPool { size, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What spilling consumers may hold between them while `unspillable` is held.
    fn for_spillers(&self, unspillable: usize) -> usize {
        self.size.saturating_sub(unspillable.max(self.size / HEADROOM))
    }
}

impl std::fmt::Display for HeadroomPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fair with headroom(pool_size: {})", human_readable_size(self.size))
    }
}

impl MemoryPool for HeadroomPool {
    fn name(&self) -> &str {
        "fair with headroom"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if spills(consumer) {
            self.state().spillers += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if spills(consumer) {
            let mut s = self.state();
            s.spillers = s.spillers.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut s = self.state();
        if always_granted(reservation.consumer()) {
            s.granted += additional;
        } else if spills(reservation.consumer()) {
            s.spillable += additional;
        } else {
            s.unspillable += additional;
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut s = self.state();
        if always_granted(reservation.consumer()) {
            s.granted = s.granted.saturating_sub(shrink);
        } else if spills(reservation.consumer()) {
            s.spillable = s.spillable.saturating_sub(shrink);
        } else {
            s.unspillable = s.unspillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut s = self.state();
        if always_granted(reservation.consumer()) {
            s.granted += additional;
            return Ok(());
        }
        let available = if spills(reservation.consumer()) {
            // No spiller takes more than its share of what spillers may hold.
            let share = self.for_spillers(s.unspillable) / s.spillers.max(1);
            share.saturating_sub(reservation.size())
        } else {
            self.size.saturating_sub(s.unspillable + s.spillable)
        };
        if additional > available {
            return Err(resources_datafusion_err!(
                "Failed to allocate additional {} for {} with {} already allocated for this reservation - {} remain available for the total memory pool: {}",
                human_readable_size(additional),
                reservation.consumer().name(),
                human_readable_size(reservation.size()),
                human_readable_size(available),
                self
            ));
        }
        if spills(reservation.consumer()) {
            s.spillable += additional;
        } else {
            s.unspillable += additional;
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let s = self.state();
        s.spillable + s.unspillable + s.granted
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spillers_leave_a_quarter_to_consumers_that_cannot_spill() {
        let pool: Arc<dyn MemoryPool> = Arc::new(HeadroomPool::new(1000));
        let a = MemoryConsumer::new("sort a").with_can_spill(true).register(&pool);
        let b = MemoryConsumer::new("sort b").with_can_spill(true).register(&pool);
        let w = MemoryConsumer::new("writer").register(&pool);
        // Two spillers share 750: 375 each.
        a.try_grow(375).unwrap();
        assert!(a.try_grow(1).is_err(), "a spiller past its share spills");
        b.try_grow(375).unwrap();
        // The writer still gets the last quarter.
        w.try_grow(250).unwrap();
        assert!(w.try_grow(1).is_err(), "the pool is full");
        assert_eq!(pool.reserved(), 1000);
        // A writer holding more than the quarter shrinks what spillers may take.
        a.free();
        b.free();
        w.try_grow(150).unwrap();
        assert!(a.try_grow(301).is_err());
        a.try_grow(300).unwrap();
        drop(b);
        // One spiller left: it may hold all that spillers may.
        a.try_grow(300).unwrap();
        assert!(a.try_grow(1).is_err());
        assert_eq!(pool.reserved(), 1000);
    }

    #[test]
    fn repartition_buffers_are_counted_but_never_refused() {
        let pool: Arc<dyn MemoryPool> = Arc::new(HeadroomPool::new(1000));
        let sort = MemoryConsumer::new("sort").with_can_spill(true).register(&pool);
        let r = MemoryConsumer::new("RepartitionExec[0]").with_can_spill(true).register(&pool);
        // The repartition is no spiller: the sort alone shares 750, whatever it holds.
        sort.try_grow(750).unwrap();
        r.try_grow(2000).unwrap();
        assert_eq!(pool.reserved(), 2750);
        assert!(sort.try_grow(1).is_err());
        let w = MemoryConsumer::new("writer").register(&pool);
        w.try_grow(250).unwrap();
        r.shrink(2000);
        assert_eq!(pool.reserved(), 1000);
    }
}
