//! A lower bound on the memory a training configuration needs, checked before anything is
//! read or written: a size that cannot fit is refused with the estimate, instead of the
//! process aborting in an allocation minutes later.
//!
//! Every term counts only what must exist at once (f32 activations the backward pass keeps,
//! the image-cache chunk being decoded), so a configuration that fits is never refused; the
//! point is to catch `--image-size 100000`, not to predict peak memory.

use crate::data::image_cache::CHUNK;

const F32: f64 = 4.0;

/// What a configuration needs at least, term by term.
#[derive(Debug, Default)]
pub struct MemoryNeed {
    terms: Vec<(String, f64)>,
}

impl MemoryNeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` for `what`.
    pub fn add(mut self, what: impl Into<String>, bytes: f64) -> Self {
        self.terms.push((what.into(), bytes));
        self
    }

    pub fn bytes(&self) -> f64 {
        self.terms.iter().map(|(_, b)| b).sum()
    }

    /// Decoding a chunk of the image cache: `CHUNK` images of `size`² RGB bytes in memory.
    pub fn image_cache(self, n_images: usize, size: usize) -> Self {
        let images = n_images.clamp(1, CHUNK) as f64;
        self.add(
            format!("decoding {size} px images for the cache"),
            images * (size as f64).powi(2) * 3.0,
        )
    }

    /// What a transformer stack keeps for its backward pass, at least: per layer the attention
    /// probabilities `[batch, heads, seq, seq]` and the feed-forward hidden `[batch, seq,
    /// d_hidden]`.
    pub fn transformer(
        self,
        what: &str,
        batch: usize,
        seq: usize,
        heads: usize,
        d_hidden: usize,
        layers: usize,
    ) -> Self {
        let (b, s) = (batch as f64, seq as f64);
        let per_layer = b * heads as f64 * s * s * F32 + b * s * d_hidden as f64 * F32;
        self.add(
            format!("{what}: {layers} layers over {seq} positions, batch {batch}"),
            per_layer * layers as f64,
        )
    }

    /// A convolution stack at full resolution: `maps` activation maps of `[batch, channels,
    /// size, size]` kept for the backward pass.
    pub fn convolutions(
        self,
        what: &str,
        batch: usize,
        channels: usize,
        size: usize,
        maps: usize,
    ) -> Self {
        let bytes = batch as f64 * channels as f64 * (size as f64).powi(2) * F32 * maps as f64;
        self.add(
            format!("{what}: {channels} channels at {size} px, batch {batch}"),
            bytes,
        )
    }

    /// Refuses when the need exceeds the memory available now, naming the largest term and
    /// `options` (the flags that set it). Unknown available memory (not Linux) passes.
    pub fn check(&self, options: &str) -> Result<(), String> {
        match available_bytes() {
            Some(available) => self.check_against(available, options),
            None => Ok(()),
        }
    }

    pub fn check_against(&self, available: f64, options: &str) -> Result<(), String> {
        let need = self.bytes();
        if need <= available {
            return Ok(());
        }
        let largest = self
            .terms
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(what, bytes)| format!("{what}: {}", gigabytes(*bytes)))
            .unwrap_or_default();
        Err(format!(
            "this configuration needs at least {} of memory ({largest}), but {} is available; lower {options}",
            gigabytes(need),
            gigabytes(available)
        ))
    }
}

fn gigabytes(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

/// `MemAvailable` from /proc/meminfo.
fn available_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_adds_its_terms_and_names_the_largest_when_refusing() {
        let need = MemoryNeed::new()
            .image_cache(10, 100)
            .transformer("classifier", 2, 10, 4, 8, 3);
        // 10 * 100² * 3 + 3 * (2*4*100*4 + 2*10*8*4)
        assert_eq!(need.bytes(), 300_000.0 + 3.0 * (3200.0 + 640.0));
        assert!(need.check_against(1e6, "--image-size").is_ok());
        let error = need.check_against(1e5, "--image-size").unwrap_err();
        assert!(
            error.contains("decoding 100 px images") && error.contains("lower --image-size"),
            "{error}"
        );
    }
}
