//! The model behind the `kmer` sample: k-mer counting of FASTA files, split
//! on record boundaries, with results that do not depend on the split.
//!
//! - [`plan_chunks`] scans a FASTA file and cuts it into byte ranges of
//!   roughly `chunk_bytes` that each start at a `>` header (the first one at
//!   the file's start), so every record lies in exactly one chunk.
//! - [`count_chunk`] counts the k-mers of a chunk: bases `ACGT` in either
//!   case are packed 2 bits each into a `u64` (`A`=0, `C`=1, `G`=2, `T`=3),
//!   k-mers holding any other letter (`N`, IUPAC codes, ...) are skipped,
//!   headers reset the window, line breaks (`\n` or `\r\n`), spaces and tabs
//!   are ignored. With `canonical`, a k-mer counts as the smaller of itself
//!   and its reverse complement. The result is a sorted run of
//!   (k-mer, count) pairs.
//! - [`write_run`] / [`RunReader`] store a run in a compact binary form, and
//!   [`merge_runs`] sums any number of runs by a k-way merge, writing the full
//!   count table and keeping the top N.
//! - [`count_native`] does the whole job natively on `threads` threads: the
//!   reference of the tests and of `tessera bench`.
//!
//! Counting is integer-only, and k-mers are ordered by their 2-bit code,
//! which is the alphabetical order of their letters, so every output is the
//! same bytes whatever the chunking, the thread count or the platform.

mod count;
mod fasta;
mod generate;
mod job;
mod params;
mod runs;

pub use count::{
    ChunkCounts, ChunkStats, count_chunk, decode_kmer, encode_kmer, reverse_complement,
};
pub use fasta::plan_chunks;
pub use generate::{generate_fasta, generate_reads};
pub use job::{KmerOutput, KmerSummary, count_native, render_top, summary_json};
pub use params::KmerParams;
pub use runs::{
    MemoryRun, MergeOutcome, RUN_HEADER_BYTES, RUN_MAGIC, RunHeader, RunReader, SortedRun,
    merge_runs, write_run,
};
