//! A whole job: every input processed, the summary and the results zip.

use std::fmt::Write as _;
use std::io::{self, Cursor, Seek, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::params::{ImageParams, output_names};
use crate::pipeline::{Processed, process_image};

/// One line of `summary.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The input's name (its path under `/inputs`).
    pub name: String,
    /// The output's name (its path in `results.zip`).
    pub output: String,
    /// The input's size in bytes.
    pub input_bytes: u64,
    /// The input's width in pixels.
    pub input_width: u32,
    /// The input's height in pixels.
    pub input_height: u32,
    /// The output's width in pixels.
    pub output_width: u32,
    /// The output's height in pixels.
    pub output_height: u32,
    /// The output's size in bytes.
    pub output_bytes: u64,
    /// The sha256 of the output, in lowercase hex.
    pub sha256: String,
}

impl SummaryRow {
    /// The row describing `processed`, made from `input` (`input_bytes`
    /// long) and written as `output`.
    pub fn new(input: &str, output: &str, input_bytes: u64, processed: &Processed) -> Self {
        Self {
            name: input.to_string(),
            output: output.to_string(),
            input_bytes,
            input_width: processed.input_width,
            input_height: processed.input_height,
            output_width: processed.output_width,
            output_height: processed.output_height,
            output_bytes: processed.bytes.len() as u64,
            sha256: sha256_hex(&processed.bytes),
        }
    }
}

/// The sha256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            write!(s, "{b:02x}").expect("writing to a String");
            s
        })
}

/// The header of `summary.csv`.
pub const SUMMARY_HEADER: &str = "name,output,input_bytes,input_width,input_height,output_width,output_height,output_bytes,sha256";

/// `summary.csv`: the header, then `rows` sorted by input name; names are
/// quoted when they hold a comma, a quote or a line break.
pub fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut rows: Vec<&SummaryRow> = rows.iter().collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let mut csv = format!("{SUMMARY_HEADER}\n");
    for r in rows {
        writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{}",
            csv_field(&r.name),
            csv_field(&r.output),
            r.input_bytes,
            r.input_width,
            r.input_height,
            r.output_width,
            r.output_height,
            r.output_bytes,
            r.sha256
        )
        .expect("writing to a String");
    }
    csv
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `results.zip`: entries stored as they are (images are already
/// compressed), with a fixed timestamp and permissions, so that the archive
/// depends only on the names and contents and their order. Add entries in
/// name order for a canonical archive.
pub struct ResultsZip<W: Write + Seek>(ZipWriter<W>);

impl<W: Write + Seek> ResultsZip<W> {
    /// A new, empty archive written to `writer`.
    pub fn new(writer: W) -> Self {
        Self(ZipWriter::new(writer))
    }

    /// Adds the file `name` holding `bytes`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .unix_permissions(0o644)
            .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        self.0.start_file(name, options).map_err(io::Error::other)?;
        self.0.write_all(bytes)
    }

    /// Writes the central directory and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.0.finish().map_err(io::Error::other)
    }
}

/// The result of a whole job, as the merge step writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    /// Every processed image as (input name, output name, result), in input
    /// name order.
    pub images: Vec<(String, String, Processed)>,
    /// The summary rows, in input name order.
    pub rows: Vec<SummaryRow>,
    /// `summary.csv`.
    pub summary_csv: String,
    /// `results.zip`.
    pub results_zip: Vec<u8>,
}

/// Processes a whole job natively on `threads` OS threads: every input
/// (name, bytes) with `params`, then the summary and the results zip, as
/// the sample's tasks and merge do in any split.
///
/// Fails with a message naming the first input (in name order) that could
/// not be processed.
pub fn process_job(
    inputs: &[(String, Vec<u8>)],
    params: &ImageParams,
    threads: usize,
) -> Result<JobOutput, String> {
    params.validate()?;
    if inputs.is_empty() {
        return Err("the job has no input images".into());
    }
    let mut order: Vec<&(String, Vec<u8>)> = inputs.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    let outputs = output_names(&names, params.format)?;

    // Image i goes to thread i % threads; results come back in order.
    let threads = threads.clamp(1, order.len());
    let results: Vec<Result<Processed, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let order = &order;
                scope.spawn(move || {
                    (t..order.len())
                        .step_by(threads)
                        .map(|i| process_image(&order[i].1, params))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut per_thread: Vec<std::vec::IntoIter<Result<Processed, String>>> = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked").into_iter())
            .collect();
        (0..order.len())
            .map(|i| {
                per_thread[i % threads]
                    .next()
                    .expect("one result per image")
            })
            .collect()
    });

    let mut images = Vec::with_capacity(order.len());
    let mut rows = Vec::with_capacity(order.len());
    for (((name, bytes), output), result) in order.iter().zip(outputs).zip(results) {
        let processed = result.map_err(|e| format!("{name}: {e}"))?;
        rows.push(SummaryRow::new(
            name,
            &output,
            bytes.len() as u64,
            &processed,
        ));
        images.push((name.clone(), output, processed));
    }

    let mut sorted: Vec<&(String, String, Processed)> = images.iter().collect();
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    let mut zip = ResultsZip::new(Cursor::new(Vec::new()));
    for (_, output, processed) in sorted {
        zip.add(output, &processed.bytes)
            .map_err(|e| format!("results.zip: {e}"))?;
    }
    let results_zip = zip
        .finish()
        .map_err(|e| format!("results.zip: {e}"))?
        .into_inner();
    Ok(JobOutput {
        summary_csv: summary_csv(&rows),
        images,
        rows,
        results_zip,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::generate::generate_images;
    use crate::params::{Filter, Format};

    #[test]
    fn sha256_of_known_strings() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn csv_quotes_awkward_names_and_sorts() {
        let row = |name: &str| SummaryRow {
            name: name.into(),
            output: "o.png".into(),
            input_bytes: 1,
            input_width: 2,
            input_height: 3,
            output_width: 4,
            output_height: 5,
            output_bytes: 6,
            sha256: "ff".into(),
        };
        let csv = summary_csv(&[row("b,\"c\".png"), row("a.png")]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], SUMMARY_HEADER);
        assert_eq!(lines[1], "a.png,o.png,1,2,3,4,5,6,ff");
        assert_eq!(lines[2], "\"b,\"\"c\"\".png\",o.png,1,2,3,4,5,6,ff");
    }

    #[test]
    fn whole_job_is_the_same_on_any_number_of_threads_and_matches_process_image() {
        let inputs = generate_images(3, 5);
        let params = ImageParams {
            width: 64,
            filter: Filter::Blur,
            sigma: 1.5,
            format: Format::Jpeg,
            quality: 80,
        };
        let one = process_job(&inputs, &params, 1).unwrap();
        assert_eq!(one, process_job(&inputs, &params, 3).unwrap());
        assert_eq!(one, process_job(&inputs, &params, 16).unwrap());

        let mut zip = zip::ZipArchive::new(Cursor::new(&one.results_zip)).unwrap();
        assert_eq!(zip.len(), inputs.len());
        for (i, (name, bytes)) in inputs.iter().enumerate() {
            let direct = process_image(bytes, &params).unwrap();
            let output = name.replace(".png", ".jpg");
            let mut stored = Vec::new();
            zip.by_name(&output)
                .unwrap()
                .read_to_end(&mut stored)
                .unwrap();
            assert_eq!(stored, direct.bytes, "{name}");
            assert_eq!(one.rows[i].sha256, sha256_hex(&direct.bytes));
            assert_eq!(one.rows[i].input_bytes, bytes.len() as u64);
            assert_eq!(one.rows[i].output_width, 64);
        }
        assert_eq!(one.summary_csv.lines().count(), 1 + inputs.len());
    }

    #[test]
    fn a_corrupt_input_is_named() {
        let mut inputs = generate_images(1, 2);
        inputs.push(("broken.png".into(), b"\x89PNG\r\n\x1a\nnonsense".to_vec()));
        let err = process_job(&inputs, &ImageParams::default(), 2).unwrap_err();
        assert!(
            err.starts_with("broken.png: cannot decode the PNG image"),
            "{err}"
        );
    }
}
