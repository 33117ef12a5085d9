/// What a byte of a sequence line is.
const SKIP: u8 = 4;
const OTHER: u8 = 5;

/// `A`/`a` → 0, `C`/`c` → 1, `G`/`g` → 2, `T`/`t` → 3; `\r`, space and tab
/// are ignored ([`SKIP`]); anything else is a base that is not ACGT
/// ([`OTHER`]).
static CODES: [u8; 256] = {
    let mut table = [OTHER; 256];
    table[b'A' as usize] = 0;
    table[b'a' as usize] = 0;
    table[b'C' as usize] = 1;
    table[b'c' as usize] = 1;
    table[b'G' as usize] = 2;
    table[b'g' as usize] = 2;
    table[b'T' as usize] = 3;
    table[b't' as usize] = 3;
    table[b'\r' as usize] = SKIP;
    table[b' ' as usize] = SKIP;
    table[b'\t' as usize] = SKIP;
    table
};

const LETTERS: [u8; 4] = *b"ACGT";

/// Counts of what a chunk held besides its k-mers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// FASTA records (`>` header lines).
    pub records: u64,
    /// Sequence letters, `ACGT` and others (`N`, ...), without line breaks
    /// and blanks.
    pub bases: u64,
    /// k-mers counted (each occurrence once).
    pub kmers: u64,
}

impl ChunkStats {
    /// Adds another chunk's counts to these.
    pub fn add(&mut self, other: &ChunkStats) {
        self.records += other.records;
        self.bases += other.bases;
        self.kmers += other.kmers;
    }
}

/// The k-mer counts of a chunk: a run sorted by k-mer, with distinct k-mers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Records, bases and k-mers of the chunk.
    pub stats: ChunkStats,
    /// The distinct k-mers, ascending.
    pub kmers: Vec<u64>,
    /// `counts[i]` is how often `kmers[i]` occurs.
    pub counts: Vec<u64>,
}

/// Packs `letters` (`ACGT`, either case) 2 bits each, the first letter
/// highest; `None` if any is not `ACGT` or there are more than 32.
pub fn encode_kmer(letters: &[u8]) -> Option<u64> {
    if letters.len() > 32 {
        return None;
    }
    letters.iter().try_fold(0u64, |acc, &b| {
        let code = CODES[b as usize];
        (code < 4).then(|| (acc << 2) | u64::from(code))
    })
}

/// The letters of the `k`-mer `kmer`, upper case.
pub fn decode_kmer(kmer: u64, k: u32) -> String {
    let mut letters = [0u8; 32];
    write_letters(kmer, k, &mut letters);
    String::from_utf8_lossy(&letters[..k as usize]).into_owned()
}

/// Writes the `k` letters of `kmer` to `out[..k]`.
pub(crate) fn write_letters(kmer: u64, k: u32, out: &mut [u8]) {
    for i in 0..k {
        let code = (kmer >> (2 * (k - 1 - i))) & 3;
        out[i as usize] = LETTERS[code as usize];
    }
}

/// The reverse complement of the `k`-mer `kmer`.
pub fn reverse_complement(kmer: u64, k: u32) -> u64 {
    let mut rc = 0u64;
    let mut rest = kmer;
    for _ in 0..k {
        rc = (rc << 2) | (3 - (rest & 3));
        rest >>= 2;
    }
    rc
}

/// Counts the `k`-mers of a chunk of FASTA text (whole records, optionally
/// preceded by blank lines), canonical ones when `canonical`.
///
/// Fails when the chunk has sequence letters before its first `>` header.
pub fn count_chunk(data: &[u8], k: u32, canonical: bool) -> Result<ChunkCounts, String> {
    assert!((1..=31).contains(&k), "k must be 1 to 31, not {k}");
    let mask = (1u64 << (2 * k)) - 1;
    let shift = 2 * (k - 1);
    let mut stats = ChunkStats::default();
    // One k-mer per base at most.
    let mut found: Vec<u64> = Vec::with_capacity(data.len());
    let mut in_record = false;
    let (mut fwd, mut rev, mut valid) = (0u64, 0u64, 0u32);
    let mut i = 0;
    while i < data.len() {
        let end = data[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |j| i + j);
        let line = &data[i..end];
        i = end + 1;
        if line.first() == Some(&b'>') {
            stats.records += 1;
            in_record = true;
            valid = 0;
            continue;
        }
        if !in_record {
            if line.iter().any(|&b| CODES[b as usize] != SKIP) {
                return Err("sequence data before the first `>` header".into());
            }
            continue;
        }
        for &b in line {
            let code = CODES[b as usize];
            if code < 4 {
                stats.bases += 1;
                let code = u64::from(code);
                fwd = ((fwd << 2) | code) & mask;
                rev = (rev >> 2) | ((3 - code) << shift);
                if valid + 1 < k {
                    valid += 1;
                } else {
                    found.push(if canonical { fwd.min(rev) } else { fwd });
                }
            } else if code == OTHER {
                stats.bases += 1;
                valid = 0;
            }
        }
    }
    stats.kmers = found.len() as u64;
    found.sort_unstable();
    let mut kmers = Vec::new();
    let mut counts = Vec::new();
    let mut rest = found.as_slice();
    while let Some(&kmer) = rest.first() {
        let same = rest.iter().take_while(|&&x| x == kmer).count();
        kmers.push(kmer);
        counts.push(same as u64);
        rest = &rest[same..];
    }
    Ok(ChunkCounts {
        stats,
        kmers,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// k-mer counts the plain way: letters joined per record, windows as
    /// strings, reverse complements as strings.
    fn naive(fasta: &str, k: usize, canonical: bool) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        let mut sequences: Vec<String> = Vec::new();
        for line in fasta.lines() {
            if line.starts_with('>') {
                sequences.push(String::new());
            } else if let Some(seq) = sequences.last_mut() {
                seq.extend(
                    line.chars()
                        .filter(|c| !c.is_whitespace())
                        .map(|c| c.to_ascii_uppercase()),
                );
            }
        }
        for seq in sequences {
            let chars: Vec<char> = seq.chars().collect();
            for window in chars.windows(k) {
                if window.iter().all(|c| "ACGT".contains(*c)) {
                    let fwd: String = window.iter().collect();
                    let rc: String = window
                        .iter()
                        .rev()
                        .map(|c| match c {
                            'A' => 'T',
                            'C' => 'G',
                            'G' => 'C',
                            _ => 'A',
                        })
                        .collect();
                    let key = if canonical && rc < fwd { rc } else { fwd };
                    *counts.entry(key).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    fn as_map(c: &ChunkCounts, k: u32) -> BTreeMap<String, u64> {
        c.kmers
            .iter()
            .zip(&c.counts)
            .map(|(&m, &n)| (decode_kmer(m, k), n))
            .collect()
    }

    #[test]
    fn encoding_round_trips_and_orders_alphabetically() {
        assert_eq!(encode_kmer(b"ACGT"), Some(0b00_01_10_11));
        assert_eq!(encode_kmer(b"acgt"), Some(0b00_01_10_11));
        assert_eq!(encode_kmer(b"ACNT"), None);
        assert_eq!(decode_kmer(0b00_01_10_11, 4), "ACGT");
        let words = ["AAAC", "ACGT", "CAAA", "GTTT", "TTTT"];
        let codes: Vec<u64> = words
            .iter()
            .map(|w| encode_kmer(w.as_bytes()).unwrap())
            .collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        let long = "ACGTTGCAACGTTGCAACGTTGCAACGTTGC";
        assert_eq!(decode_kmer(encode_kmer(long.as_bytes()).unwrap(), 31), long);
        assert_eq!(
            reverse_complement(encode_kmer(b"AACG").unwrap(), 4),
            encode_kmer(b"CGTT").unwrap()
        );
    }

    #[test]
    fn counts_match_a_naive_count() {
        let fasta = ">r1 first\nACGTACGTNNacgtac\r\ngtAC GTT\n\n>r2\n>r3 x\nTTTTTTTTTTTT\nGGGGCCCCAAAANACGTAC\n";
        for k in [1u32, 2, 3, 5, 8, 12] {
            for canonical in [false, true] {
                let counts = count_chunk(fasta.as_bytes(), k, canonical).unwrap();
                let expected = naive(fasta, k as usize, canonical);
                assert_eq!(as_map(&counts, k), expected, "k={k} canonical={canonical}");
                assert_eq!(counts.stats.kmers, expected.values().sum::<u64>());
                assert_eq!(counts.stats.records, 3);
                assert_eq!(counts.stats.bases, 16 + 7 + 12 + 19);
            }
        }
    }

    #[test]
    fn generated_data_matches_a_naive_count() {
        let fasta = crate::generate_fasta(5, 12, 300);
        for (k, canonical) in [(7u32, true), (21, false), (31, true)] {
            let counts = count_chunk(fasta.as_bytes(), k, canonical).unwrap();
            assert_eq!(as_map(&counts, k), naive(&fasta, k as usize, canonical));
        }
    }

    #[test]
    fn sequence_before_a_header_is_an_error() {
        assert!(count_chunk(b"\n \r\n>a\nAC\n", 1, false).is_ok());
        let err = count_chunk(b"ACGT\n>a\nAC\n", 1, false).unwrap_err();
        assert!(err.contains("before the first `>` header"), "{err}");
    }
}
