//! The coalescing trigger channel between webhook receivers and the agent loop.
//!
//! Built on `tokio::sync::watch`: senders bump a sequence number and store the
//! latest trigger; the loop sees at most one pending wake-up however many
//! deliveries arrived while it was busy, so N webhooks during a sync cause
//! exactly one extra sync.
use tokio::sync::watch;

use super::Provider;

/// One accepted delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Name of the receiver that accepted it.
    pub receiver: String,
    /// Provider of that receiver.
    pub provider: Provider,
    /// Commit the forge announced, if any.
    pub after: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    latest: Option<Trigger>,
}

/// Sending half; cheap to clone.
#[derive(Clone, Debug)]
pub struct TriggerSender(watch::Sender<State>);

/// Receiving half, owned by the agent loop.
#[derive(Debug)]
pub struct TriggerReceiver {
    rx: watch::Receiver<State>,
    seen: u64,
}

/// What the loop gets when it takes the pending triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The most recent trigger.
    pub latest: Trigger,
    /// How many triggers arrived since the previous take (≥ 1).
    pub coalesced: u64,
}

/// A new channel with nothing pending.
pub fn trigger_channel() -> (TriggerSender, TriggerReceiver) {
    let (tx, rx) = watch::channel(State::default());
    (TriggerSender(tx), TriggerReceiver { rx, seen: 0 })
}

impl TriggerSender {
    /// Ask for a sync. Never blocks; works even when no loop is listening yet.
    pub fn trigger(&self, trigger: Trigger) {
        self.0.send_modify(|s| {
            s.seq += 1;
            s.latest = Some(trigger);
        });
    }
}

impl TriggerReceiver {
    /// Take whatever is pending without waiting.
    pub fn try_recv(&mut self) -> Option<Pending> {
        let state = self.rx.borrow_and_update();
        if state.seq == self.seen {
            return None;
        }
        let pending = Pending { latest: state.latest.clone()?, coalesced: state.seq - self.seen };
        self.seen = state.seq;
        Some(pending)
    }

    /// Wait until something is pending and take it; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Pending> {
        loop {
            if let Some(p) = self.try_recv() {
                return Some(p);
            }
            self.rx.changed().await.ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(after: &str) -> Trigger {
        Trigger { receiver: "r".into(), provider: Provider::Github, after: Some(after.into()) }
    }

    #[tokio::test]
    async fn many_triggers_while_busy_become_one() {
        let (tx, mut rx) = trigger_channel();
        assert_eq!(rx.try_recv(), None);
        for i in 0..5 {
            tx.trigger(t(&i.to_string()));
        }
        assert_eq!(rx.recv().await, Some(Pending { latest: t("4"), coalesced: 5 }));
        assert_eq!(rx.try_recv(), None);
        tx.trigger(t("5"));
        assert_eq!(rx.recv().await.map(|p| p.coalesced), Some(1));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }
}
