//! The processor of the `kmer` sample.
//!
//! `process` reads its chunk (bytes `start..end` of the job input `file`, or
//! of the application image's demo file when `file` is an absolute path),
//! counts its k-mers and writes them as a sorted run to
//! `intermediate/counts.bin`. `merge` sums every task's run by a k-way merge
//! and writes `counts.tsv` (every k-mer, ascending), `top.tsv` (the `top`
//! most frequent) and `summary.json`.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use tessera_processor_sdk::{
    Error, Job, Level, Params, Processor, Task, TaskResult, export_processor, input_path, log,
    output_path, progress,
};
use tessera_sample_kmer_model::{
    ChunkStats, KmerParams, KmerSummary, RunReader, count_chunk, merge_runs, render_top,
    summary_json, write_run,
};

/// A task's sorted (k-mer, count) run, under `/output`.
const RUN_FILE: &str = "intermediate/counts.bin";

struct KmerCounter;

impl Processor for KmerCounter {
    fn process(task: Task) -> Result<(), Error> {
        let params = kmer_params(task.job_parameters())?;
        let file: String = task.parameters().get("file")?;
        let start: u64 = task.parameters().get("start")?;
        let end: u64 = task.parameters().get("end")?;
        let what = format!("input `{file}` bytes {start}..{end}");
        let len = end
            .checked_sub(start)
            .and_then(|len| usize::try_from(len).ok())
            .ok_or_else(|| Error::new(format!("{what}: not a byte range")))?;

        let mut data = vec![0u8; len];
        // A job input, or the demo file of the application image (absolute).
        let path = if file.starts_with('/') {
            file.clone().into()
        } else {
            input_path(&file)
        };
        let mut reader =
            File::open(path).map_err(|e| Error::new(format!("input `{file}`: {e}")))?;
        reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| reader.read_exact(&mut data))
            .map_err(|e| Error::new(format!("{what}: {e}")))?;
        progress(0.2);
        let counts = count_chunk(&data, params.k, params.canonical)
            .map_err(|e| Error::new(format!("{what}: {e}")))?;
        drop(data);
        progress(0.8);

        fs::create_dir_all(output_path("intermediate"))?;
        let mut out = BufWriter::with_capacity(1 << 16, File::create(output_path(RUN_FILE))?);
        write_run(&mut out, params.k, params.canonical, &counts)?;
        out.flush()?;
        Ok(())
    }

    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let params = kmer_params(job.parameters())?;
        let mut stats = ChunkStats::default();
        let mut runs = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let path = task.output_path(RUN_FILE);
            let file =
                File::open(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            let run = RunReader::new(BufReader::with_capacity(1 << 16, file))
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            let header = run.header();
            if header.k != params.k || header.canonical != params.canonical {
                return Err(Error::new(format!(
                    "{}: counted with k = {} (canonical {}), the job asks for k = {} (canonical {})",
                    path.display(),
                    header.k,
                    header.canonical,
                    params.k,
                    params.canonical
                )));
            }
            stats.add(&header.stats);
            runs.push(run);
        }
        progress(0.1);

        let mut counts_tsv =
            BufWriter::with_capacity(1 << 16, File::create(output_path("counts.tsv"))?);
        let outcome = merge_runs(&mut runs, params.k, params.top as usize, &mut counts_tsv)?;
        counts_tsv.flush()?;
        if outcome.total != stats.kmers {
            return Err(Error::new(format!(
                "the runs hold {} k-mers, their headers say {}",
                outcome.total, stats.kmers
            )));
        }
        progress(0.9);

        let summary = KmerSummary {
            k: params.k,
            canonical: params.canonical,
            // A job without inputs counts the demo file.
            files: job.inputs.len().max(1) as u64,
            records: stats.records,
            bases: stats.bases,
            total_kmers: outcome.total,
            distinct_kmers: outcome.distinct,
        };
        fs::write(output_path("top.tsv"), render_top(&outcome.top, params.k))?;
        fs::write(output_path("summary.json"), summary_json(&summary))?;
        log(
            Level::Info,
            &format!(
                "{} records, {} bases, {} {}-mers, {} distinct",
                summary.records,
                summary.bases,
                summary.total_kmers,
                summary.k,
                summary.distinct_kmers
            ),
        );
        Ok(())
    }
}

export_processor!(KmerCounter);

fn kmer_params(params: &Params) -> Result<KmerParams, Error> {
    let params: KmerParams = params.deserialize()?;
    params.validate()?;
    Ok(params)
}
