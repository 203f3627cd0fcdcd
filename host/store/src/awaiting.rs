//! Writes whose callers wait for the cloud's answer (a `forward` store):
//! the writer registers each one by its outbox sequence number before the
//! flush that makes the record visible to the shipper, so no answer can
//! arrive before anyone listens; the shipper answers them as acks come in
//! and tells them "queued" when the link fails.

use outpost_wire::Version;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// What the cloud said about a record someone waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudAnswer {
    /// Applied, and its version is the cloud's current one for the key.
    Applied,
    /// The cloud holds a newer version for the key (this one lost, or was
    /// overwritten in the same batch).
    Superseded(Version),
    /// The cloud refused the record for good (its code and reason); it is
    /// quarantined on this node.
    Refused(String),
    /// No answer now (the link failed, the cloud refuses this node's
    /// stream, or replication is off): the record stays in the outbox and
    /// ships when the link allows.
    Queued,
}

/// Senders by sequence number.
#[derive(Debug, Default)]
pub struct Awaiting {
    waiters: Mutex<BTreeMap<u64, oneshot::Sender<CloudAnswer>>>,
}

impl Awaiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<CloudAnswer>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter on record `seq`.
    pub(crate) fn register(&self, seq: u64) -> oneshot::Receiver<CloudAnswer> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(seq, tx);
        rx
    }

    /// Which of the records `from..=to` someone waits on (cheap when
    /// nobody waits: one lock, one empty range).
    pub fn awaited(&self, from: u64, to: u64) -> Vec<u64> {
        if from > to {
            return Vec::new();
        }
        self.lock().range(from..=to).map(|(seq, _)| *seq).collect()
    }

    /// Answers every waiter on records up to `through`: `answer` says what
    /// the cloud said of each.
    pub fn answer_through(&self, through: u64, answer: impl Fn(u64) -> CloudAnswer) {
        let answered = {
            let mut waiters = self.lock();
            let rest = waiters.split_off(&through.saturating_add(1));
            std::mem::replace(&mut *waiters, rest)
        };
        for (seq, waiter) in answered {
            // A caller that stopped waiting (its timeout) is gone: fine.
            let _ = waiter.send(answer(seq));
        }
    }

    /// Answers the waiter on record `seq`, if any (a record set aside).
    pub fn answer(&self, seq: u64, answer: CloudAnswer) {
        if let Some(waiter) = self.lock().remove(&seq) {
            let _ = waiter.send(answer);
        }
    }

    /// Tells every waiter "queued": the link is down, or the stream is
    /// blocked. Their records stay in the outbox.
    pub fn all_queued(&self) {
        let all = std::mem::take(&mut *self.lock());
        for (_, waiter) in all {
            let _ = waiter.send(CloudAnswer::Queued);
        }
    }

    /// Waiters registered and not answered yet.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_answered_in_order_up_to_the_ack_and_queued_on_failure() {
        let awaiting = Awaiting::default();
        let (a, b, c) = (
            awaiting.register(3),
            awaiting.register(5),
            awaiting.register(9),
        );
        assert_eq!(awaiting.awaited(1, 5), vec![3, 5]);
        assert_eq!(awaiting.awaited(6, 8), Vec::<u64>::new());
        let winner = Version {
            hlc: 7,
            node: "b".into(),
        };
        awaiting.answer_through(5, |seq| {
            if seq == 5 {
                CloudAnswer::Superseded(winner.clone())
            } else {
                CloudAnswer::Applied
            }
        });
        assert_eq!(a.await.unwrap(), CloudAnswer::Applied);
        assert_eq!(b.await.unwrap(), CloudAnswer::Superseded(winner));
        assert_eq!(awaiting.len(), 1);
        awaiting.all_queued();
        assert_eq!(c.await.unwrap(), CloudAnswer::Queued);
        assert!(awaiting.is_empty());
    }
}
