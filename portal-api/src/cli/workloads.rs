//! The jobs `tessera bench compute` measures: for each sample, its
//! parameters and inputs, and the same computation done natively on
//! threads, with the check that the job's outputs match it.

use anyhow::{Context, anyhow};
use serde_json::json;
use tessera_sample_exec_model::{ExecParams, Invocation, Outcome, run_job};
use tessera_sample_imageproc_model::{Filter, Format, ImageParams, generate_images, process_job};
use tessera_sample_kmer_model::{KmerParams, count_native, generate_reads};
use tessera_sample_montecarlo_model::{
    Histogram, RiskParameters, RiskSummary, Tail, partition, path_loss, risk_from_tail,
};
use tessera_sample_render_model::{RenderParams, render_job_files};
use tessera_sample_testshard_model::{Suite, Summary, TestCase, count_primes, run_native};

/// A job's output compared with the native result: `true` when it matches.
pub(super) type Check = Box<dyn Fn(&[u8]) -> bool + Send>;

/// The native computation: runs on the given number of threads (as often
/// as asked).
type Native = Box<dyn Fn(usize) -> anyhow::Result<NativeRun> + Send>;

/// What the native computation measured and found.
pub(super) struct NativeRun {
    /// Seconds the computation took (without preparing its inputs).
    pub secs: f64,
    /// Checks of the job's outputs, by path.
    pub checks: Vec<(String, Check)>,
}

/// `f`'s result and the seconds it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = std::time::Instant::now();
    let result = f();
    (result, start.elapsed().as_secs_f64())
}

/// One sample's benchmark job.
pub(super) struct Workload {
    /// The job's parameters.
    pub parameters: serde_json::Value,
    /// Its input files, (name, contents).
    pub inputs: Vec<(String, Vec<u8>)>,
    /// A few words on the size of the work, for the report.
    pub size: String,
    /// The same computation natively.
    pub native: Native,
}

/// The samples `tessera bench compute` measures, in order.
pub(super) const SAMPLES: &[&str] = &[
    "montecarlo",
    "render",
    "kmer",
    "imageproc",
    "testshard",
    "exec",
];

/// The benchmark job of `sample`, with `tasks` tasks where the sample lets
/// the job choose (montecarlo: `paths` paths).
pub(super) fn workload(sample: &str, tasks: u64, paths: u64) -> anyhow::Result<Workload> {
    match sample {
        "montecarlo" => Ok(montecarlo(tasks, paths)),
        "render" => Ok(render()),
        "kmer" => Ok(kmer()),
        "imageproc" => Ok(imageproc(tasks)),
        "testshard" => Ok(testshard(tasks)),
        "exec" => Ok(exec(tasks)),
        other => Err(anyhow!(
            "`{other}` has no compute benchmark; the samples measured are: {}",
            SAMPLES.join(", ")
        )),
    }
}

fn bytes_equal(expected: impl Into<Vec<u8>>) -> Check {
    let expected = expected.into();
    Box::new(move |got| got == expected.as_slice())
}

fn montecarlo(tasks: u64, paths: u64) -> Workload {
    let params = RiskParameters {
        paths,
        seed: 42,
        confidence: 0.99,
        horizon_days: 10,
        tasks: tasks as u32,
    };
    Workload {
        parameters: serde_json::to_value(params).expect("parameters serialize"),
        inputs: Vec::new(),
        size: format!("{paths} paths"),
        native: Box::new(move |threads| {
            let ((var, es), secs) = timed(|| native_risk(&params, threads));
            let check: Check = Box::new(move |got| {
                serde_json::from_slice::<RiskSummary>(got).is_ok_and(|s| {
                    s.var.to_bits() == var.to_bits()
                        && s.expected_shortfall.to_bits() == es.to_bits()
                })
            });
            let checks = vec![("result.json".to_string(), check)];
            Ok(NativeRun { secs, checks })
        }),
    }
}

/// The montecarlo computation natively on `threads` threads: each simulates
/// a share of the paths keeping its tail and histogram, as the tasks do.
fn native_risk(params: &RiskParameters, threads: usize) -> (f64, f64) {
    let model = params.model();
    let k = params.tail_len();
    let partials: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = partition(params.paths, threads as u64)
            .into_iter()
            .map(|range| {
                let model = &model;
                scope.spawn(move || {
                    let mut tail = Tail::new(k);
                    let mut histogram = Histogram::new(model);
                    for path in range {
                        let loss = path_loss(model, path);
                        tail.push(loss);
                        histogram.add(loss);
                    }
                    std::hint::black_box(histogram.total());
                    tail.into_sorted_desc()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker panicked"))
            .collect()
    });
    let mut tail = Tail::new(k);
    for partial in partials {
        tail.extend(partial);
    }
    risk_from_tail(&tail.into_sorted_desc(), k)
}

fn render() -> Workload {
    let params = RenderParams {
        frames: 48,
        width: 480,
        height: 360,
        tile_size: 240,
        samples_per_pixel: 4,
        max_depth: 4,
    };
    Workload {
        parameters: serde_json::to_value(params).expect("parameters serialize"),
        inputs: Vec::new(),
        size: format!(
            "{} frames of {}x{}, {} rays a pixel, {} tiles",
            params.frames,
            params.width,
            params.height,
            params.samples_per_pixel,
            params.frames as usize * params.tiles().len()
        ),
        native: Box::new(move |threads| {
            let (files, secs) = timed(|| render_job_files(&params, threads));
            let checks = files
                .context("encoding the frames")?
                .into_iter()
                .map(|(path, bytes)| (path, bytes_equal(bytes)))
                .collect();
            Ok(NativeRun { secs, checks })
        }),
    }
}

fn kmer() -> Workload {
    let params = KmerParams {
        k: 21,
        canonical: true,
        top: 50,
        chunk_bytes: 2 << 20,
    };
    // Three runs of 8 MB of 150-base reads of one 1 Mb genome.
    let inputs: Vec<(String, Vec<u8>)> = (0..3u64)
        .map(|i| {
            let fasta = generate_reads(100 + i, 1_000_000, 50_000, 150);
            (format!("run-{i}.fa"), fasta.into_bytes())
        })
        .collect();
    let total: usize = inputs.iter().map(|(_, b)| b.len()).sum();
    let files: Vec<Vec<u8>> = inputs.iter().map(|(_, b)| b.clone()).collect();
    Workload {
        parameters: serde_json::to_value(params).expect("parameters serialize"),
        inputs,
        size: format!(
            "{} FASTA files, {total} bytes, k = {}",
            files.len(),
            params.k
        ),
        native: Box::new(move |threads| {
            let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
            let (out, secs) = timed(|| count_native(&slices, &params, threads));
            let out = out.map_err(|e| anyhow!(e))?;
            Ok(NativeRun {
                secs,
                checks: vec![
                    ("top.tsv".to_string(), bytes_equal(out.top_tsv)),
                    ("counts.tsv".to_string(), bytes_equal(out.counts_tsv)),
                    ("summary.json".to_string(), bytes_equal(out.summary_json)),
                ],
            })
        }),
    }
}

fn imageproc(tasks: u64) -> Workload {
    let params = ImageParams {
        width: 512,
        filter: Filter::Blur,
        sigma: 3.0,
        format: Format::Png,
        ..ImageParams::default()
    };
    let inputs = generate_images(7, 192);
    let per_task = (inputs.len() as u64).div_ceil(tasks.max(1));
    let mut parameters = serde_json::to_value(params).expect("parameters serialize");
    parameters["per_task"] = json!(per_task);
    let images = inputs.clone();
    Workload {
        parameters,
        size: format!(
            "{} images to {} pixels wide, blurred, as PNG",
            inputs.len(),
            params.width
        ),
        inputs,
        native: Box::new(move |threads| {
            let (out, secs) = timed(|| process_job(&images, &params, threads));
            let out = out.map_err(|e| anyhow!(e))?;
            Ok(NativeRun {
                secs,
                checks: vec![
                    ("results.zip".to_string(), bytes_equal(out.results_zip)),
                    ("summary.csv".to_string(), bytes_equal(out.summary_csv)),
                ],
            })
        }),
    }
}

/// The primes below this limit: a case of the testshard benchmark.
const PRIME_LIMIT: u32 = 20_000_000;

fn testshard(tasks: u64) -> Workload {
    let expected = count_primes(PRIME_LIMIT);
    let suite = Suite {
        name: "bench".into(),
        cases: (0..96u64)
            .map(|i| TestCase {
                name: format!("primes-{i:02}"),
                program: "bin/checks.wasm".into(),
                args: vec![
                    "primes".into(),
                    (PRIME_LIMIT - i as u32).to_string(),
                    // Every fifth case expects a wrong count: it fails.
                    if i % 5 == 4 { expected + 1 } else { expected }.to_string(),
                ],
                expected_exit: 0,
                estimated_ms: 100 + i,
            })
            .collect(),
    };
    let text = serde_json::to_vec(&suite).expect("a suite serializes");
    Workload {
        parameters: json!({"suite": "bench.json", "shards": tasks}),
        size: format!(
            "{} cases, each a sieve up to {PRIME_LIMIT}",
            suite.cases.len()
        ),
        inputs: vec![("bench.json".into(), text)],
        native: Box::new(move |threads| {
            let app = tempfile::tempdir()?;
            let (results, secs) =
                timed(|| run_native(&suite, "bin/checks.wasm", app.path(), threads));
            let native = Summary::new(&suite, &results, tasks);
            let check: Check = Box::new(move |got| {
                serde_json::from_slice::<Summary>(got).is_ok_and(|s| {
                    (s.tests, s.passed, s.failed, &s.failures)
                        == (native.tests, native.passed, native.failed, &native.failures)
                })
            });
            let checks = vec![("summary.json".to_string(), check)];
            Ok(NativeRun { secs, checks })
        }),
    }
}

fn exec(tasks: u64) -> Workload {
    let inputs: Vec<(String, Vec<u8>)> = (0..32u64)
        .map(|i| (format!("text-{i:02}.txt"), text(i, 4 << 20)))
        .collect();
    let params = ExecParams {
        program: "bin/textstat.wasm".into(),
        args: "--upper {input} {output}".into(),
        output_extension: "upper".into(),
        stdout_to: "{stem}.stat".into(),
        allow_failure: false,
    };
    let per_task = (inputs.len() as u64).div_ceil(tasks.max(1));
    let mut parameters = serde_json::to_value(&params).expect("parameters serialize");
    parameters["per_task"] = json!(per_task);
    let total: usize = inputs.iter().map(|(_, b)| b.len()).sum();
    let files = inputs.clone();
    Workload {
        parameters,
        size: format!("textstat --upper on {} files, {total} bytes", inputs.len()),
        inputs,
        native: Box::new(move |threads| {
            // The program's work as it is natively: read the input file,
            // write the output file.
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            let dir = tempfile::tempdir()?;
            let (inputs, outputs) = (dir.path().join("inputs"), dir.path().join("output"));
            std::fs::create_dir_all(&outputs)?;
            for (name, bytes) in &files {
                let path = inputs.join(name);
                std::fs::create_dir_all(path.parent().expect("a folder"))?;
                std::fs::write(path, bytes)?;
            }
            let run = |invocation: &Invocation| -> Result<Outcome, String> {
                let io = |e: std::io::Error| e.to_string();
                let bytes = std::fs::read(inputs.join(&invocation.name)).map_err(io)?;
                let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
                let input = format!("/inputs/{}", invocation.name);
                let stdout = tessera_sample_exec_programs::stat_line(&text, &input);
                let output = outputs.join(&invocation.output);
                std::fs::write(&output, tessera_sample_exec_programs::transform(text, true))
                    .map_err(io)?;
                Ok(Outcome {
                    status: 0,
                    stdout: stdout.into_bytes(),
                    stderr: Vec::new(),
                    output: Some(std::fs::read(&output).map_err(io)?),
                })
            };
            let (out, secs) = timed(|| run_job(&params, &names, threads, run));
            let out = out.map_err(|e| anyhow!(e))?;
            Ok(NativeRun {
                secs,
                checks: vec![
                    ("manifest.csv".to_string(), bytes_equal(out.manifest_csv)),
                    ("summary.json".to_string(), bytes_equal(out.summary_json)),
                ],
            })
        }),
    }
}

/// `len` bytes of English-like text made from `seed`, in lines of words.
fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the", "batch", "of", "tasks", "runs", "on", "every", "node", "and", "merges", "its",
        "results", "into", "one", "job", "output", "straße", "café", "naïve", "wasm",
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    let mut column = 0;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = WORDS[(state % WORDS.len() as u64) as usize];
        out.push_str(word);
        column += word.len() + 1;
        if column > 72 {
            out.push('\n');
            column = 0;
        } else {
            out.push(' ');
        }
    }
    out.into_bytes()
}
