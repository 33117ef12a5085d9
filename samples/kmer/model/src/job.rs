use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::count::decode_kmer;
use crate::{ChunkCounts, ChunkStats, KmerParams, MemoryRun, count_chunk, merge_runs, plan_chunks};

/// The summary of a `kmer` job, written to its `summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmerSummary {
    /// The k-mer length.
    pub k: u32,
    /// Whether k-mers were counted canonically.
    pub canonical: bool,
    /// The number of input files.
    pub files: u64,
    /// FASTA records.
    pub records: u64,
    /// Sequence letters (ACGT and others such as N).
    pub bases: u64,
    /// k-mers counted, each occurrence once.
    pub total_kmers: u64,
    /// Distinct k-mers.
    pub distinct_kmers: u64,
}

/// The outputs of a `kmer` job, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmerOutput {
    /// The summary.
    pub summary: KmerSummary,
    /// `top.tsv`: see [`render_top`].
    pub top_tsv: String,
    /// `counts.tsv`: see [`merge_runs`](crate::merge_runs).
    pub counts_tsv: String,
    /// `summary.json`: see [`summary_json`].
    pub summary_json: String,
}

/// `top.tsv`: a `rank\tkmer\tcount` header, then one line per k-mer of
/// `top` (already ordered), ranks from 1.
pub fn render_top(top: &[(u64, u64)], k: u32) -> String {
    let mut tsv = String::from("rank\tkmer\tcount\n");
    for (rank, (kmer, count)) in top.iter().enumerate() {
        writeln!(tsv, "{}\t{}\t{count}", rank + 1, decode_kmer(*kmer, k))
            .expect("writing to a String");
    }
    tsv
}

/// `summary.json`: the summary as pretty JSON with a final newline.
pub fn summary_json(summary: &KmerSummary) -> String {
    let mut json = serde_json::to_string_pretty(summary).expect("a summary serializes");
    json.push('\n');
    json
}

/// The whole job computed natively on `threads` threads: the FASTA `files`
/// are cut on record boundaries, the chunks counted in parallel and the
/// sorted counts merged. The outputs do not depend on `threads` nor on
/// `params.chunk_bytes`.
///
/// Fails with the job's messages: bad parameters, no files, a file that is
/// not FASTA (named `input <n>`, from 1), or no record at all.
pub fn count_native(
    files: &[&[u8]],
    params: &KmerParams,
    threads: usize,
) -> Result<KmerOutput, String> {
    params.validate()?;
    if files.is_empty() {
        return Err("the job has no input files: give it one or more FASTA files".into());
    }
    let threads = threads.max(1);
    let total: u64 = files.iter().map(|f| f.len() as u64).sum();
    let piece = (total / (4 * threads as u64)).max(1 << 16);
    let mut chunks: Vec<&[u8]> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        for range in plan_chunks(*file, piece).map_err(|e| format!("input {}: {e}", i + 1))? {
            chunks.push(&file[range.start as usize..range.end as usize]);
        }
    }
    if chunks.is_empty() {
        return Err("the input files hold no FASTA record".into());
    }

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<ChunkCounts, String>>>> =
        Mutex::new(vec![None; chunks.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(chunks.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    let counted = count_chunk(chunk, params.k, params.canonical);
                    results.lock().expect("no thread panicked")[i] = Some(counted);
                }
            });
        }
    });
    let mut stats = ChunkStats::default();
    let mut runs = Vec::with_capacity(chunks.len());
    for result in results.into_inner().expect("no thread panicked") {
        let counts = result.expect("every chunk was counted")?;
        stats.add(&counts.stats);
        runs.push(MemoryRun::new(counts));
    }

    let mut counts_tsv = Vec::new();
    let outcome = merge_runs(&mut runs, params.k, params.top as usize, &mut counts_tsv)?;
    debug_assert_eq!(outcome.total, stats.kmers);
    let summary = KmerSummary {
        k: params.k,
        canonical: params.canonical,
        files: files.len() as u64,
        records: stats.records,
        bases: stats.bases,
        total_kmers: outcome.total,
        distinct_kmers: outcome.distinct,
    };
    Ok(KmerOutput {
        summary,
        top_tsv: render_top(&outcome.top, params.k),
        counts_tsv: String::from_utf8(counts_tsv).expect("counts.tsv is ASCII"),
        summary_json: summary_json(&summary),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::generate_fasta;

    #[test]
    fn native_results_do_not_depend_on_threads_and_match_a_map() {
        let texts = [
            generate_fasta(11, 300, 600),
            generate_fasta(12, 50, 2000),
            generate_fasta(13, 1, 40),
        ];
        let files: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let params = KmerParams {
            k: 13,
            top: 10,
            ..KmerParams::default()
        };
        let one = count_native(&files, &params, 1).unwrap();
        for threads in [2, 3, 8] {
            assert_eq!(count_native(&files, &params, threads).unwrap(), one);
        }

        let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
        for text in &texts {
            let counts = count_chunk(text.as_bytes(), 13, true).unwrap();
            for (kmer, count) in counts.kmers.iter().zip(&counts.counts) {
                *expected.entry(*kmer).or_default() += count;
            }
        }
        assert_eq!(one.summary.distinct_kmers, expected.len() as u64);
        assert_eq!(one.summary.records, 351);
        assert_eq!(one.summary.files, 3);
        assert_eq!(one.counts_tsv.lines().count(), expected.len() + 1);
        assert_eq!(one.top_tsv.lines().count(), 11);
        let best = expected.values().max().unwrap();
        assert!(
            one.top_tsv
                .lines()
                .nth(1)
                .unwrap()
                .ends_with(&format!("\t{best}"))
        );
        let parsed: KmerSummary = serde_json::from_str(&one.summary_json).unwrap();
        assert_eq!(parsed, one.summary);
    }

    #[test]
    fn bad_inputs_are_refused_with_their_reason() {
        let params = KmerParams::default();
        assert!(
            count_native(&[], &params, 2)
                .unwrap_err()
                .contains("no input files")
        );
        let err = count_native(&[b">a\nAC\n", b"PK\x03\x04"], &params, 2).unwrap_err();
        assert!(err.starts_with("input 2: it is not FASTA"), "{err}");
        let err = count_native(&[b"", b"\n"], &params, 2).unwrap_err();
        assert!(err.contains("no FASTA record"), "{err}");
        let bad = KmerParams { k: 40, ..params };
        assert!(
            count_native(&[b">a\n"], &bad, 2)
                .unwrap_err()
                .contains("`k`")
        );
    }
}
