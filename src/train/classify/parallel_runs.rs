//! Training several runs at once on threads, with one prerequisite (the pretraining behind the
//! `lxmert-pretrained` row) that some runs wait for while the others start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::train::classify::classifier_run::RunSpec;
use crate::train::classify::config::ClassifyError;

/// Runs `prerequisite` (if any) and `work` on every spec with up to `jobs` threads. Specs for
/// which `waits` holds start only after the prerequisite finished; the others start at once, so
/// the pretraining behind one row overlaps with the other rows' training. Results keep the order
/// of `specs`. After a failure no new job starts, and the first error (prerequisite first, then
/// in spec order) is returned.
pub fn run_in_parallel<'a, T: Send, P: Send>(
    specs: &'a [RunSpec<'a>],
    jobs: usize,
    prerequisite: Option<&(dyn Fn() -> Result<P, ClassifyError> + Sync)>,
    waits: impl Fn(&RunSpec) -> bool + Sync,
    work: impl Fn(&'a RunSpec<'a>) -> Result<T, ClassifyError> + Sync,
) -> Result<(Option<P>, Vec<T>), ClassifyError> {
    let pending = Mutex::new((0..specs.len()).collect::<Vec<usize>>());
    let claimed = AtomicBool::new(prerequisite.is_none());
    let ready = AtomicBool::new(prerequisite.is_none());
    let failed = AtomicBool::new(false);
    let prerequisite_result: Mutex<Option<Result<P, ClassifyError>>> = Mutex::new(None);
    let results: Vec<Mutex<Option<Result<T, ClassifyError>>>> =
        specs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, specs.len() + 1) {
            scope.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(prerequisite) = prerequisite {
                    if !claimed.swap(true, Ordering::SeqCst) {
                        let result = prerequisite();
                        failed.fetch_or(result.is_err(), Ordering::SeqCst);
                        *prerequisite_result
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(result);
                        ready.store(true, Ordering::SeqCst);
                        continue;
                    }
                }
                let (next, left) = {
                    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                    let is_ready = ready.load(Ordering::SeqCst);
                    let position = pending.iter().position(|&i| is_ready || !waits(&specs[i]));
                    (position.map(|p| pending.remove(p)), pending.len())
                };
                match next {
                    Some(i) => {
                        let result = work(&specs[i]);
                        failed.fetch_or(result.is_err(), Ordering::SeqCst);
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    }
                    None if left == 0 => break,
                    // Only runs waiting for the prerequisite are left.
                    None => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            });
        }
    });
    let prerequisite = match prerequisite_result
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        Some(Err(error)) => return Err(error),
        Some(Ok(value)) => Some(value),
        None => None,
    };
    let mut done = Vec::with_capacity(specs.len());
    for slot in results {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(result)) => done.push(result),
            Some(Err(error)) => return Err(error),
            None => {} // not started because another job failed; that error comes first
        }
    }
    Ok((prerequisite, done))
}
