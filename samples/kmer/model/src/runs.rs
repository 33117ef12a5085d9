use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};

use crate::count::write_letters;
use crate::{ChunkCounts, ChunkStats};

/// The first 8 bytes of a run file.
pub const RUN_MAGIC: [u8; 8] = *b"TKMRUN01";

/// The size of a run file's header: the magic, `k` and `canonical` as
/// `u32`s, then records, bases, k-mers and distinct k-mers as `u64`s.
pub const RUN_HEADER_BYTES: usize = 8 + 4 + 4 + 4 * 8;

/// What a run file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    /// The k-mer length.
    pub k: u32,
    /// Whether the k-mers are canonical.
    pub canonical: bool,
    /// Records, bases and k-mers of the chunk.
    pub stats: ChunkStats,
    /// The number of (k-mer, count) pairs that follow.
    pub distinct: u64,
}

/// Writes `counts` as a run: the header, then one (k-mer, count) pair of
/// little-endian `u64`s per distinct k-mer, ascending.
pub fn write_run<W: Write>(
    out: &mut W,
    k: u32,
    canonical: bool,
    counts: &ChunkCounts,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(RUN_HEADER_BYTES);
    header.extend_from_slice(&RUN_MAGIC);
    header.extend_from_slice(&k.to_le_bytes());
    header.extend_from_slice(&u32::from(canonical).to_le_bytes());
    for value in [
        counts.stats.records,
        counts.stats.bases,
        counts.stats.kmers,
        counts.kmers.len() as u64,
    ] {
        header.extend_from_slice(&value.to_le_bytes());
    }
    out.write_all(&header)?;
    let mut block = Vec::with_capacity(16 * 4096);
    for (kmers, counts) in counts.kmers.chunks(4096).zip(counts.counts.chunks(4096)) {
        block.clear();
        for (kmer, count) in kmers.iter().zip(counts) {
            block.extend_from_slice(&kmer.to_le_bytes());
            block.extend_from_slice(&count.to_le_bytes());
        }
        out.write_all(&block)?;
    }
    Ok(())
}

/// A source of (k-mer, count) pairs in strictly ascending k-mer order.
pub trait SortedRun {
    /// The next pair, `None` at the end.
    fn next_pair(&mut self) -> Result<Option<(u64, u64)>, String>;
}

/// Reads a run written by [`write_run`], checking its order and length.
/// Give it a buffered reader.
pub struct RunReader<R> {
    reader: R,
    header: RunHeader,
    left: u64,
    last: Option<u64>,
}

impl<R: Read> RunReader<R> {
    /// Reads and checks the header.
    pub fn new(mut reader: R) -> Result<Self, String> {
        let mut bytes = [0u8; RUN_HEADER_BYTES];
        reader
            .read_exact(&mut bytes)
            .map_err(|e| format!("not a k-mer run: {e}"))?;
        if bytes[..8] != RUN_MAGIC {
            return Err("not a k-mer run: wrong magic".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let header = RunHeader {
            k: u32_at(8),
            canonical: u32_at(12) != 0,
            stats: ChunkStats {
                records: u64_at(16),
                bases: u64_at(24),
                kmers: u64_at(32),
            },
            distinct: u64_at(40),
        };
        Ok(Self {
            reader,
            left: header.distinct,
            header,
            last: None,
        })
    }

    /// The run's header.
    pub fn header(&self) -> &RunHeader {
        &self.header
    }
}

impl<R: Read> SortedRun for RunReader<R> {
    fn next_pair(&mut self) -> Result<Option<(u64, u64)>, String> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.reader.read(&mut probe) {
                Ok(0) => Ok(None),
                Ok(_) => Err("the run has more pairs than its header says".into()),
                Err(e) => Err(format!("reading the run: {e}")),
            };
        }
        let mut pair = [0u8; 16];
        self.reader
            .read_exact(&mut pair)
            .map_err(|e| format!("reading the run: {e}"))?;
        let kmer = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
        if self.last.is_some_and(|last| last >= kmer) {
            return Err("the run is not sorted".into());
        }
        self.last = Some(kmer);
        self.left -= 1;
        Ok(Some((kmer, count)))
    }
}

/// A run held in memory.
pub struct MemoryRun {
    counts: ChunkCounts,
    next: usize,
}

impl MemoryRun {
    /// The run of a chunk's counts.
    pub fn new(counts: ChunkCounts) -> Self {
        Self { counts, next: 0 }
    }
}

impl SortedRun for MemoryRun {
    fn next_pair(&mut self) -> Result<Option<(u64, u64)>, String> {
        let i = self.next;
        if i == self.counts.kmers.len() {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some((self.counts.kmers[i], self.counts.counts[i])))
    }
}

/// What [`merge_runs`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Distinct k-mers over all runs.
    pub distinct: u64,
    /// The sum of all counts.
    pub total: u64,
    /// The most frequent k-mers: count descending, then k-mer ascending.
    pub top: Vec<(u64, u64)>,
}

/// Sums the counts of `runs` by a k-way merge, writing `counts.tsv` to
/// `counts_tsv` (a `kmer\tcount` header, then a line per distinct k-mer in
/// ascending order, letters upper case) and keeping the `top` most frequent.
pub fn merge_runs<R: SortedRun, W: Write>(
    runs: &mut [R],
    k: u32,
    top: usize,
    counts_tsv: &mut W,
) -> Result<MergeOutcome, String> {
    let write_err = |e: io::Error| format!("writing counts.tsv: {e}");
    counts_tsv.write_all(b"kmer\tcount\n").map_err(write_err)?;
    let mut heads: Vec<u64> = vec![0; runs.len()];
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.iter_mut().enumerate() {
        if let Some((kmer, count)) = run.next_pair()? {
            heads[i] = count;
            heap.push(Reverse((kmer, i)));
        }
    }
    // The worst of the best `top` at the heap's top: lowest count, then
    // highest k-mer.
    let mut best: BinaryHeap<Reverse<(u64, Reverse<u64>)>> = BinaryHeap::with_capacity(top + 1);
    let (mut distinct, mut total) = (0u64, 0u64);
    let mut line = [0u8; 64];
    while let Some(Reverse((kmer, i))) = heap.pop() {
        let mut count = heads[i];
        advance(&mut runs[i], i, &mut heads, &mut heap)?;
        while let Some(&Reverse((next, j))) = heap.peek() {
            if next != kmer {
                break;
            }
            heap.pop();
            count += heads[j];
            advance(&mut runs[j], j, &mut heads, &mut heap)?;
        }
        distinct += 1;
        total += count;
        let key = Reverse((count, Reverse(kmer)));
        if best.len() < top {
            best.push(key);
        } else if let Some(worst) = best.peek()
            && key < *worst
        {
            best.pop();
            best.push(key);
        }
        let n = format_line(kmer, k, count, &mut line);
        counts_tsv.write_all(&line[..n]).map_err(write_err)?;
    }
    let mut top: Vec<(u64, u64)> = best
        .into_iter()
        .map(|Reverse((count, Reverse(kmer)))| (kmer, count))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(MergeOutcome {
        distinct,
        total,
        top,
    })
}

fn advance<R: SortedRun>(
    run: &mut R,
    i: usize,
    heads: &mut [u64],
    heap: &mut BinaryHeap<Reverse<(u64, usize)>>,
) -> Result<(), String> {
    if let Some((kmer, count)) = run.next_pair()? {
        heads[i] = count;
        heap.push(Reverse((kmer, i)));
    }
    Ok(())
}

/// Writes `<letters>\t<count>\n` to `line`, returning its length.
pub(crate) fn format_line(kmer: u64, k: u32, count: u64, line: &mut [u8; 64]) -> usize {
    let k = k as usize;
    write_letters(kmer, k as u32, &mut line[..k]);
    line[k] = b'\t';
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut rest = count;
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for d in 0..n {
        line[k + 1 + d] = digits[n - 1 - d];
    }
    line[k + 1 + n] = b'\n';
    k + n + 2
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{count_chunk, decode_kmer};

    #[test]
    fn runs_round_trip_and_reject_damage() {
        let counts = count_chunk(b">a\nACGTACGTTTGA\n>b\nNNACGTA\n", 3, true).unwrap();
        let mut bytes = Vec::new();
        write_run(&mut bytes, 3, true, &counts).unwrap();
        assert_eq!(bytes.len(), RUN_HEADER_BYTES + 16 * counts.kmers.len());
        let mut reader = RunReader::new(bytes.as_slice()).unwrap();
        assert_eq!(
            *reader.header(),
            RunHeader {
                k: 3,
                canonical: true,
                stats: counts.stats,
                distinct: counts.kmers.len() as u64
            }
        );
        let mut pairs = Vec::new();
        while let Some(pair) = reader.next_pair().unwrap() {
            pairs.push(pair);
        }
        let expected: Vec<_> = counts
            .kmers
            .iter()
            .copied()
            .zip(counts.counts.iter().copied())
            .collect();
        assert_eq!(pairs, expected);

        let mut truncated = RunReader::new(&bytes[..bytes.len() - 3]).unwrap();
        let err = std::iter::from_fn(|| truncated.next_pair().transpose())
            .find_map(Result::err)
            .unwrap();
        assert!(err.contains("reading the run"), "{err}");
        assert!(RunReader::new(&b"garbage"[..]).is_err());
        let mut swapped = bytes.clone();
        swapped[RUN_HEADER_BYTES..RUN_HEADER_BYTES + 32].rotate_left(16);
        let mut reader = RunReader::new(swapped.as_slice()).unwrap();
        let err = std::iter::from_fn(|| reader.next_pair().transpose())
            .find_map(Result::err)
            .unwrap();
        assert_eq!(err, "the run is not sorted");
    }

    #[test]
    fn merging_sums_like_a_map() {
        let texts = [
            crate::generate_fasta(1, 30, 200),
            crate::generate_fasta(2, 10, 500),
            String::new(),
            crate::generate_fasta(3, 5, 100),
        ];
        let k = 9;
        let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
        let mut runs = Vec::new();
        for text in &texts {
            let counts = count_chunk(text.as_bytes(), k, true).unwrap();
            for (kmer, count) in counts.kmers.iter().zip(&counts.counts) {
                *expected.entry(*kmer).or_default() += count;
            }
            runs.push(MemoryRun::new(counts));
        }
        let mut tsv = Vec::new();
        let outcome = merge_runs(&mut runs, k, 15, &mut tsv).unwrap();
        assert_eq!(outcome.distinct, expected.len() as u64);
        assert_eq!(outcome.total, expected.values().sum::<u64>());
        let mut lines = String::from("kmer\tcount\n");
        for (kmer, count) in &expected {
            lines.push_str(&format!("{}\t{count}\n", decode_kmer(*kmer, k)));
        }
        assert_eq!(String::from_utf8(tsv).unwrap(), lines);

        let mut by_count: Vec<(u64, u64)> = expected.into_iter().collect();
        by_count.sort_by_key(|&(kmer, count)| (Reverse(count), kmer));
        by_count.truncate(15);
        assert_eq!(outcome.top, by_count);
        assert!(outcome.top[0].1 > 5, "the motifs repeat");
    }

    #[test]
    fn ties_are_broken_by_the_kmer() {
        let counts = count_chunk(b">a\nTTTGGGCCCAAA\n", 1, false).unwrap();
        let mut tsv = Vec::new();
        let outcome = merge_runs(&mut [MemoryRun::new(counts)], 1, 2, &mut tsv).unwrap();
        assert_eq!(outcome.top, vec![(0, 3), (1, 3)]);
        assert_eq!(tsv, b"kmer\tcount\nA\t3\nC\t3\nG\t3\nT\t3\n");
        let mut line = [0u8; 64];
        let n = format_line(
            encode(b"ACGTACGTACGTACGTACGTACGTACGTACG"),
            31,
            u64::MAX,
            &mut line,
        );
        assert_eq!(
            &line[..n],
            b"ACGTACGTACGTACGTACGTACGTACGTACG\t18446744073709551615\n"
        );
    }

    fn encode(letters: &[u8]) -> u64 {
        crate::encode_kmer(letters).unwrap()
    }
}
