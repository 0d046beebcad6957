//! The sequencer's mailbox: the work it takes, what it answers, and [`SequencerHandle`], the
//! one way the rest of the service reaches it (typed methods, typed errors). It depends on
//! neither the sequencer nor the shared state, so both can depend on it.

use crate::alerts::{ActionError, Alert, Limit};
use crate::db::StorageError;
use crate::registry::Reject;
use provenance_core::keys::KeyId;
use provenance_core::merkle::Hash;
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::EventRefusal;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Why the sequencer could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SequenceError {
    /// It is not running (this node is shutting down, or not yet leading).
    #[error("the sequencer is not running")]
    NotRunning,
    /// It stopped before it answered.
    #[error("the sequencer stopped before it answered")]
    Stopped,
    /// The batch could not be committed (nothing of it was acknowledged).
    #[error("the batch was not committed: {0}")]
    Storage(Arc<StorageError>),
}

/// Why a registry event was not logged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryRefused {
    /// The registry's rules refuse it at the position it would get.
    #[error(transparent)]
    Rule(#[from] EventRefusal),
    /// It cannot be encoded (a structural error `validate` should have caught).
    #[error("the event cannot be encoded: {0}")]
    Encoding(String),
}

/// A reply channel.
pub type Reply<T> = oneshot::Sender<Result<T, SequenceError>>;

/// A reading that passed every check and waits for its index.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The gateway envelope bytes, exactly as received.
    pub envelope: Vec<u8>,
    /// Sensor id.
    pub sensor_id: String,
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 of the sensor layer (duplicate vs equivocation).
    pub sensor_hash: [u8; 32],
    /// The gateway's key.
    pub gateway_kid: KeyId,
    /// The sensor's key.
    pub sensor_kid: KeyId,
    /// Measured-at, ms.
    pub measured_at: u64,
    /// Received-at, ms.
    pub received_at: u64,
    /// The measurements (LOINC, value), for the alert rules.
    pub vitals: Vec<(&'static str, f64)>,
}

/// A logged entry's receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Log index.
    pub index: u64,
    /// RFC 9162 leaf hash.
    pub leaf_hash: Hash,
}

/// What became of a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Logged now.
    Accepted(Receipt),
    /// The same signed reading was logged before: its receipt.
    Duplicate(Receipt),
    /// A different signed reading with this sequence number was logged before, at this index.
    Equivocation(u64),
    /// The registry refuses it at the position it would get (a registry change committed after
    /// the ingest handler's early check, or a sequence number not above the sensor's last).
    Refused(Reject),
    /// A time-sharded log: measured before the open shard's period less its grace, so it
    /// belongs to a closed shard (`Reject::ShardClosed`); the open shard.
    Late(crate::db::ShardRow),
}

/// A checked private message, ready to be logged (issue #17).
#[derive(Debug, Clone)]
pub struct PrivateCandidate {
    /// The private envelope bytes, exactly as received.
    pub envelope: Vec<u8>,
    /// The gateway id (from the registry, by its key).
    pub gateway_id: String,
    /// The gateway's key.
    pub gateway_kid: KeyId,
    /// The household.
    pub household: String,
    /// The gateway's message number.
    pub msg_seq: u64,
    /// Received-at, ms.
    pub received_at: u64,
    /// The recipient keys.
    pub recipients: Vec<KeyId>,
    /// SHA-256 of the envelope (duplicate vs equivocation).
    pub envelope_sha256: [u8; 32],
}

/// Work for the sequencer.
pub enum Work {
    /// Readings to log.
    Readings(Vec<Candidate>, Reply<Vec<Outcome>>),
    /// Private messages to log.
    Private(Vec<PrivateCandidate>, Reply<Vec<Outcome>>),
    /// A registry event to log and apply.
    Registry(RegistryEvent, Reply<Result<Receipt, RegistryRefused>>),
    /// A clinician's action on alerts.
    Alert(AlertWork, Reply<AlertOutcome>),
}

/// A clinician's action on alerts, applied by the sequencer (the alerts' one writer).
#[derive(Debug, Clone)]
pub enum AlertWork {
    /// Acknowledge an alert.
    Acknowledge {
        /// Alert id.
        id: String,
        /// Token name.
        actor: String,
    },
    /// Resolve an alert.
    Resolve {
        /// Alert id.
        id: String,
        /// Token name.
        actor: String,
    },
    /// Set (or clear) a patient's alert limits.
    Limits {
        /// Patient pseudonym.
        patient: String,
        /// (LOINC, limits or `None` for the NEWS2 default).
        limits: Vec<(String, Option<Limit>)>,
        /// Token name.
        actor: String,
    },
}

/// The outcome of [`AlertWork`]: the changed alert, if one changed, or why it was refused.
pub type AlertOutcome = Result<Option<Alert>, ActionError>;

/// The handle to the sequencer's mailbox.
#[derive(Clone, Debug)]
pub struct SequencerHandle {
    tx: mpsc::Sender<Work>,
}

impl SequencerHandle {
    /// A handle over the mailbox's sending side (the sequencer holds the receiving side).
    pub fn new(tx: mpsc::Sender<Work>) -> Self {
        Self { tx }
    }

    /// Whether the sequencer has stopped taking work.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn call<T>(&self, work: impl FnOnce(Reply<T>) -> Work) -> Result<T, SequenceError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(work(tx))
            .await
            .map_err(|_| SequenceError::NotRunning)?;
        rx.await.map_err(|_| SequenceError::Stopped)?
    }

    /// Logs checked readings; one outcome per candidate, in order, after the commit.
    pub async fn readings(
        &self,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Outcome>, SequenceError> {
        self.call(|tx| Work::Readings(candidates, tx)).await
    }

    /// Logs checked private messages; one outcome per candidate, in order, after the commit.
    pub async fn private(
        &self,
        candidates: Vec<PrivateCandidate>,
    ) -> Result<Vec<Outcome>, SequenceError> {
        self.call(|tx| Work::Private(candidates, tx)).await
    }

    /// Logs a registry event and applies it, or says why the registry refuses it.
    pub async fn registry(
        &self,
        event: RegistryEvent,
    ) -> Result<Result<Receipt, RegistryRefused>, SequenceError> {
        self.call(|tx| Work::Registry(event, tx)).await
    }

    /// Applies a clinician's action on alerts.
    pub async fn alert(&self, action: AlertWork) -> Result<AlertOutcome, SequenceError> {
        self.call(|tx| Work::Alert(action, tx)).await
    }
}
