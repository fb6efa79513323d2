//! FNV-1a, 64 bit: a hash that is stable across Rust versions and machines (unlike
//! `DefaultHasher`), for naming caches and recognising checkpoints.

/// An FNV-1a hasher.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The FNV-1a hash of `bytes` as 16 hex digits.
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    let mut hash = Fnv::new();
    hash.write(bytes);
    hash.hex()
}
