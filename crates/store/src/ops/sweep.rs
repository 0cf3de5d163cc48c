//! The sweeper's batch: due families and grace windows, the run of expired access tokens, and
//! the token-index buckets that ended.

use super::*;
use crate::unwind::drain_below;

impl Tx<'_> {
    pub(super) fn delete_family(&mut self, id: &FamilyId, rec: &FamilyRecord) -> Result<u64> {
        let mut tokens = 0;
        for t in self.family_token_ids(id)? {
            if self.tokens.remove(&t.to_bytes()).db()?.is_some() {
                tokens += 1;
            }
            self.family_tokens.remove(&ft_key(id, &t)).db()?;
        }
        self.families.remove(id.as_bytes()).db()?;
        self.deadlines
            .remove(&dl_key(rec.deadline(), &Entry::Family(*id)))
            .db()?;
        let entry = Entry::Family(*id);
        self.by_subject.remove(&ix_key(&rec.subject, &entry)).db()?;
        self.by_client.remove(&ix_key(&rec.client, &entry)).db()?;
        Ok(tokens)
    }

    /// One sweep batch of at most about `limit` entries of work: families and grace windows
    /// due in `deadlines`, then the run of access tokens keyed below `now + 1`, then the token
    /// index buckets every token of which is gone.
    pub(super) fn sweep(&mut self, limit: usize, now: u64) -> Result<SweepCounts> {
        let mut c = SweepCounts::default();
        self.sweep_deadlines(limit, now, &mut c)?;
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        if room == 0 {
            c.more = true;
            return Ok(c);
        }
        // Access tokens: keys sort by deadline, so the due ones are the first run of the table.
        let mut first = None;
        let mut family_links = Vec::new();
        let swept = drain_below(&mut self.tokens, &tokens_after(now), room, |k, v| {
            let key = AccessKey::from_bytes(k);
            first.get_or_insert(key.deadline);
            // Unauthenticated read of the family link, used only to drop the (family, this
            // key) entry; a forged link names an entry that does not exist.
            if let Some(f) = AccessRecord::family_link(v) {
                family_links.push((f, key));
            }
        })?;
        if let Some(d) = first {
            c.oldest_deadline = Some(c.oldest_deadline.map_or(d, |o| o.min(d)));
        }
        for (f, key) in &family_links {
            self.family_tokens.remove(&ft_key(f, key)).db()?;
        }
        c.examined += swept as u64;
        c.tokens += swept as u64;
        // Every token keyed below the first remaining key is gone, and so is every token due at
        // `now` if none remains; whole buckets below that frontier hold only swept tokens.
        let next = self
            .tokens
            .first()
            .db()?
            .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
        let frontier = next.map_or(now.saturating_add(1), |d| d.min(now.saturating_add(1)));
        if next.is_some_and(|d| d <= now) {
            c.more = true;
        }
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        // Recent entries are keyed like the tokens: those below the frontier name swept ones.
        let end = access_keys_from(frontier);
        let dropped = drain_below(&mut self.recent_tokens, &end, room, |_, _| {})?;
        // Each recent entry stands for a subject and a client entry.
        c.index_dropped += 2 * dropped as u64;
        c.more |= self
            .recent_tokens
            .first()
            .db()?
            .is_some_and(|(k, _)| k.value() < &end);
        let room = room.saturating_sub(dropped);
        for table in [&mut self.subject_tokens, &mut self.client_tokens] {
            let (dropped, more) = drop_ended_buckets(table, frontier, room)?;
            c.index_dropped += dropped;
            c.more |= more;
        }
        Ok(c)
    }

    pub(super) fn sweep_deadlines(
        &mut self,
        limit: usize,
        now: u64,
        c: &mut SweepCounts,
    ) -> Result<()> {
        let upto = dl_upto(now);
        let mut due = Vec::new();
        for item in self.deadlines.range(..=&upto).db()? {
            let (k, _) = item.db()?;
            if due.len() == limit {
                c.more = true;
                break;
            }
            due.push(*k.value());
        }
        for key in due {
            c.examined += 1;
            let Some((deadline, entry)) = dl_parse(&key) else {
                self.deadlines.remove(&key).db()?;
                c.corrupt += 1;
                continue;
            };
            c.oldest_deadline = Some(c.oldest_deadline.map_or(deadline, |d| d.min(deadline)));
            match entry {
                Entry::Family(f) => match self.family(&f) {
                    Ok(Some(rec)) if rec.deadline() > now => {
                        self.deadlines.remove(&key).db()?;
                        self.deadlines
                            .insert(&dl_key(rec.deadline(), &entry), ())
                            .db()?;
                        c.refiled += 1;
                    }
                    Ok(Some(rec)) => {
                        if rec.deadline() != deadline {
                            self.deadlines.remove(&key).db()?;
                        }
                        c.tokens += self.delete_family(&f, &rec)?;
                        c.families += 1;
                    }
                    Ok(None) => {
                        self.deadlines.remove(&key).db()?;
                    }
                    Err(StoreError::Corrupt(_)) => {
                        self.deadlines.remove(&key).db()?;
                        c.corrupt += 1;
                    }
                    Err(e) => return Err(e),
                },
                // Access tokens are not filed here (their keys are their deadlines); an entry
                // of this kind is not one this build wrote.
                Entry::Token(_) => {
                    self.deadlines.remove(&key).db()?;
                    c.corrupt += 1;
                }
                Entry::Proof(id) => self.sweep_proof(&key, &id, now, c)?,
                Entry::Grace(f, generation) => {
                    self.deadlines.remove(&key).db()?;
                    match self.family(&f) {
                        Ok(Some(mut rec))
                            if rec.generation == generation && !rec.grace.is_empty() =>
                        {
                            rec.grace.clear();
                            let d = rec.deadline();
                            self.put_family(&f, &rec, Some(d))?;
                            c.grace_erased += 1;
                        }
                        Ok(_) => {}
                        Err(StoreError::Corrupt(_)) => c.corrupt += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Deletes up to `limit` entries of the buckets that end at or before `frontier` (every token
/// with a deadline below `frontier` is gone). Returns the count and whether such entries remain.
fn drop_ended_buckets(table: &mut TxT<'_>, frontier: u64, limit: usize) -> Result<(u64, bool)> {
    let end = tx_bucket_start(bucket(frontier));
    let n = drain_below(table, &end, limit, |_, ()| {})?;
    let more = table.first().db()?.is_some_and(|(k, _)| k.value() < &end);
    Ok((n as u64, more))
}
