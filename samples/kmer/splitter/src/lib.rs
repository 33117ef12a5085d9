//! The splitter of the `kmer` sample: checks the parameters, scans every
//! input FASTA file for its record boundaries and gives each task one chunk
//! of about `chunk_bytes` (`chunk-00000`, `chunk-00001`, …: input name, byte
//! start and end), with the merge step on.
//!
//! A job without input files counts the demo file of the application image,
//! [`DEMO_FASTA`], instead.

use std::fs::File;
use std::path::PathBuf;

use tessera_sample_kmer_model::{KmerParams, plan_chunks};
use tessera_splitter_sdk::{
    Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter, input_path,
};

/// The FASTA file a job without inputs counts (tasks read it by this
/// absolute path; job inputs are named relative to `/inputs`).
const DEMO_FASTA: &str = "/app/demo.fa";

struct FastaChunks;

impl Splitter for FastaChunks {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let params: KmerParams = job.parameters().deserialize()?;
        params.validate()?;
        // (name given to the task, path here, whether it is a job input)
        let files: Vec<(String, PathBuf, bool)> = if job.inputs.is_empty() {
            vec![(DEMO_FASTA.to_string(), PathBuf::from(DEMO_FASTA), false)]
        } else {
            job.inputs
                .iter()
                .map(|input| (input.name.clone(), input_path(&input.name), true))
                .collect()
        };
        let mut plan = SplitPlan::new();
        for (name, path, is_input) in &files {
            let file = File::open(path).map_err(|e| {
                Error::new(if *is_input {
                    format!("input `{name}`: {e}")
                } else {
                    format!(
                        "the job has no input files and the demo file {name} cannot be read ({e}): \
                         give the job one or more FASTA files"
                    )
                })
            })?;
            let ranges = plan_chunks(file, params.chunk_bytes)
                .map_err(|e| Error::new(format!("input `{name}`: {e}")))?;
            for range in ranges {
                let mut task = TaskSpec::new(format!("chunk-{:05}", plan.len()))
                    .param("file", name)
                    .param("start", range.start)
                    .param("end", range.end);
                if *is_input {
                    task = task.input(name);
                }
                plan.push(task);
            }
        }
        if plan.is_empty() {
            return Err(Error::new("the input files hold no FASTA record"));
        }
        Ok(plan)
    }
}

export_splitter!(FastaChunks);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_splitter_sdk::Params;

    #[test]
    fn bad_parameters_and_missing_inputs_are_refused() {
        let job = |json: &str| {
            let parameters = serde_json::from_str(json).unwrap();
            Job::new("j", "kmer", 1, Params::new(parameters), Vec::new())
        };
        let err = FastaChunks::split(job(
            r#"{"k":32,"canonical":true,"top":20,"chunk_bytes":4096}"#,
        ))
        .unwrap_err();
        assert!(err.message().contains("`k`"), "{err}");
        let err = FastaChunks::split(job(
            r#"{"k":21,"canonical":true,"top":20,"chunk_bytes":4096}"#,
        ))
        .unwrap_err();
        assert!(err.message().contains("no input files"), "{err}");
        assert!(err.message().contains(DEMO_FASTA), "{err}");
    }
}
