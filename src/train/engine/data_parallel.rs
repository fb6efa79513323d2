//! Data parallelism inside the one engine: N replicas of the model, one per device, each
//! taking a contiguous shard of every batch. Gradients are all-reduced with Burn's collective
//! engine (`GradientsParams::all_reduce`, burn-collective's local server: one thread per
//! device; the same calls serve CUDA devices, not run here), so every replica takes the same
//! optimizer step and the replicas stay identical.
//!
//! Replica 0 is the engine's own loop ([`crate::train::engine::train`]); it evaluates, logs and
//! checkpoints as on one device. Replicas 1..N run on threads ([`Helpers`]), started from
//! replica 0's model and optimizer state after any resume, so checkpoints and resuming are
//! those of one device.
//!
//! Each shard's loss is weighted by its share of the batch before backward and the gradients
//! are summed: for losses that are means over examples this is the full batch's gradient
//! (tests/engine.rs checks it against one device). Losses normalised over the whole
//! batch's tokens (masked LM) are normalised per shard instead, and a step's random draws
//! (masking, caption choice, dropout) come from the same step seed on each shard, so those
//! runs agree with one device in distribution, not bit for bit. The logged losses are
//! all-reduced the same way: they are the whole batch's.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};

use burn::collective::{
    finish_collective, register, reset_collective, CollectiveConfig, PeerId, ReduceOperation,
};
use burn::optim::GradientsParams;
use burn::store::ModuleSnapshot;
use burn::tensor::Tensor;

use crate::nn::{AutodiffBackend, Backend};
use crate::train::engine::step_log::Losses;
use crate::train::TrainError;

/// Burn's local collective server is one per backend and process: one data-parallel run at a
/// time holds this.
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// One replica's place in a data-parallel step.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub id: PeerId,
    /// This replica's share of the batch (its shard's examples / the batch's).
    pub share: f32,
}

/// Splits a batch into `n` contiguous shards as even as possible (the first ones one longer).
pub fn shards(indices: &[usize], n: usize) -> Vec<&[usize]> {
    let (base, extra) = (indices.len() / n, indices.len() % n);
    let mut rest = indices;
    (0..n)
        .map(|k| {
            let (shard, tail) = rest.split_at(base + usize::from(k < extra));
            rest = tail;
            shard
        })
        .collect()
}

/// Sums `grads` over the replicas.
pub fn all_reduce_gradients<B: AutodiffBackend>(
    grads: GradientsParams,
    peer: Peer,
) -> Result<GradientsParams, TrainError> {
    grads
        .all_reduce::<B::InnerBackend>(peer.id, ReduceOperation::Sum)
        .map_err(|e| TrainError::Config(format!("all-reduce of the gradients failed: {e:?}")))
}

/// The whole batch's losses from each replica's: each weighted by its share and summed.
pub fn all_reduce_losses<B: Backend>(
    losses: Losses<B>,
    peer: Peer,
) -> Result<Losses<B>, TrainError> {
    let reduce = |value: Tensor<B, 1>| -> Result<Tensor<B, 1>, TrainError> {
        let weighted = value.mul_scalar(peer.share).into_primitive().tensor();
        burn::collective::all_reduce::<B>(peer.id, weighted, ReduceOperation::Sum)
            .map(|t| Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(t)))
            .map_err(|e| TrainError::Config(format!("all-reduce of the losses failed: {e:?}")))
    };
    Ok(Losses {
        total: reduce(losses.total)?,
        parts: losses
            .parts
            .into_iter()
            .map(|(name, value)| Ok((name, reduce(value)?)))
            .collect::<Result<_, TrainError>>()?,
    })
}

/// What replica 0 asks of the others, once per step.
pub struct ShardStep {
    pub indices: Vec<usize>,
    pub step_seed: u64,
    pub lr: f64,
}

/// Replicas 1..N on their threads, each holding its state `S` (model, optimizer, ...).
pub struct Helpers<'scope, S> {
    senders: Vec<SyncSender<(ShardStep, Peer)>>,
    handles: Vec<ScopedJoinHandle<'scope, Result<S, TrainError>>>,
    _collective: std::sync::MutexGuard<'static, ()>,
}

/// Registers replica 0 on `devices[0]` and starts one thread per further device with its
/// state from `replicas` (one per device after the first), which runs `step` on each shard it
/// is sent. `B` is the backend whose tensors are all-reduced (the inner one under autodiff).
pub fn start<'scope, 'env, B, S, F>(
    scope: &'scope Scope<'scope, 'env>,
    devices: &[B::Device],
    replicas: Vec<S>,
    step: &'env F,
) -> Result<Helpers<'scope, S>, TrainError>
where
    B: Backend,
    S: Send + 'scope,
    F: Fn(S, ShardStep, Peer, &B::Device) -> Result<S, TrainError> + Sync,
{
    assert_eq!(
        replicas.len() + 1,
        devices.len(),
        "one state per further device"
    );
    let guard = COLLECTIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    reset_collective::<B>();
    let config = CollectiveConfig::default().with_num_devices(devices.len());
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for (k, (state, device)) in replicas.into_iter().zip(&devices[1..]).enumerate() {
        let id = PeerId::from(k + 1);
        let (sender, receiver) = sync_channel::<(ShardStep, Peer)>(1);
        let (device, config) = (device.clone(), config.clone());
        senders.push(sender);
        handles.push(scope.spawn(move || -> Result<S, TrainError> {
            register::<B>(id, device.clone(), config).map_err(|e| {
                TrainError::Config(format!("replica {id} cannot join the collective: {e:?}"))
            })?;
            let mut state = state;
            for (shard, peer) in receiver {
                state = step(state, shard, peer, &device)?;
            }
            finish_collective::<B>(id).map_err(|e| {
                TrainError::Config(format!("replica {id} cannot leave the collective: {e:?}"))
            })?;
            Ok(state)
        }));
    }
    register::<B>(PeerId::from(0usize), devices[0].clone(), config)
        .map_err(|e| TrainError::Config(format!("cannot join the collective: {e:?}")))?;
    Ok(Helpers {
        senders,
        handles,
        _collective: guard,
    })
}

impl<S> Helpers<'_, S> {
    /// The number of replicas, replica 0 included.
    pub fn replicas(&self) -> usize {
        self.senders.len() + 1
    }

    /// Sends replicas 1.. their shards of the step; returns replica 0's place.
    pub fn dispatch(
        &self,
        shards: &[&[usize]],
        batch: usize,
        step_seed: u64,
        lr: f64,
    ) -> Result<Peer, TrainError> {
        let share = |shard: &[usize]| shard.len() as f32 / batch as f32;
        for (k, (sender, shard)) in self.senders.iter().zip(&shards[1..]).enumerate() {
            let step = ShardStep {
                indices: shard.to_vec(),
                step_seed,
                lr,
            };
            let peer = Peer {
                id: PeerId::from(k + 1),
                share: share(shard),
            };
            sender
                .send((step, peer))
                .map_err(|_| TrainError::Config("a data-parallel replica stopped".into()))?;
        }
        Ok(Peer {
            id: PeerId::from(0usize),
            share: share(shards[0]),
        })
    }

    /// Stops the replicas and returns their final states, or the first error of any of them.
    pub fn finish<B: Backend>(self) -> Result<Vec<S>, TrainError> {
        drop(self.senders);
        // Leaving does not wait for the others.
        let left = finish_collective::<B>(PeerId::from(0usize))
            .map_err(|e| TrainError::Config(format!("cannot leave the collective: {e:?}")));
        let states = self
            .handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(TrainError::Config(
                        "a data-parallel replica panicked".into(),
                    ))
                })
            })
            .collect::<Result<Vec<S>, TrainError>>()?;
        left.map(|()| states)
    }
}

/// The path of the first parameter in which `a` and `b` differ at all, if any.
pub fn first_difference<B: AutodiffBackend, M: ModuleSnapshot<B>>(a: &M, b: &M) -> Option<String> {
    let (mine, theirs) = (a.collect(None, None, false), b.collect(None, None, false));
    mine.iter()
        .zip(&theirs)
        .find(|(x, y)| match (x.to_data(), y.to_data()) {
            (Ok(x), Ok(y)) => x != y,
            _ => true,
        })
        .map(|(x, _)| x.full_path())
}
