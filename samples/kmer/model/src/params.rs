use serde::{Deserialize, Serialize};

/// The parameters of a `kmer` job, as its `assembly.toml` declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmerParams {
    /// The k-mer length, 1 to 31.
    pub k: u32,
    /// Whether a k-mer and its reverse complement count as one (the smaller).
    pub canonical: bool,
    /// How many of the most frequent k-mers `top.tsv` lists.
    pub top: u32,
    /// The approximate size of a chunk (one task) in bytes; chunks end on
    /// record boundaries, so a long record makes a longer chunk.
    pub chunk_bytes: u64,
}

impl KmerParams {
    /// The longest k-mer: 31 bases fill 62 bits of a `u64`.
    pub const MAX_K: u32 = 31;
    /// The most k-mers `top.tsv` may list.
    pub const MAX_TOP: u32 = 100_000;
    /// The smallest chunk size.
    pub const MIN_CHUNK_BYTES: u64 = 1024;

    /// Checks the ranges the model needs, with messages for the job's user.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_K).contains(&self.k) {
            return Err(format!(
                "`k` must be between 1 and {}, not {}",
                Self::MAX_K,
                self.k
            ));
        }
        if !(1..=Self::MAX_TOP).contains(&self.top) {
            return Err(format!(
                "`top` must be between 1 and {}, not {}",
                Self::MAX_TOP,
                self.top
            ));
        }
        if self.chunk_bytes < Self::MIN_CHUNK_BYTES {
            return Err(format!(
                "`chunk_bytes` must be at least {}, not {}",
                Self::MIN_CHUNK_BYTES,
                self.chunk_bytes
            ));
        }
        Ok(())
    }
}

impl Default for KmerParams {
    /// The defaults of `assembly.toml`: k = 21, canonical, top 20, 4 MiB chunks.
    fn default() -> Self {
        Self {
            k: 21,
            canonical: true,
            top: 20,
            chunk_bytes: 4 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_parameter() {
        assert_eq!(KmerParams::default().validate(), Ok(()));
        let bad = |p: KmerParams| p.validate().unwrap_err();
        assert!(
            bad(KmerParams {
                k: 0,
                ..Default::default()
            })
            .contains("`k`")
        );
        assert!(
            bad(KmerParams {
                k: 32,
                ..Default::default()
            })
            .contains("`k`")
        );
        assert!(
            bad(KmerParams {
                top: 0,
                ..Default::default()
            })
            .contains("`top`")
        );
        assert!(
            bad(KmerParams {
                chunk_bytes: 10,
                ..Default::default()
            })
            .contains("`chunk_bytes`")
        );
    }
}
