//! The processor of the `imageproc` sample.
//!
//! `process` runs every input image of its task through the model's
//! pipeline and writes, per image, the result as `images/<output>` and a
//! thumbnail as `previews/<output stem>.png`, plus the task's summary rows
//! as `intermediate/rows.json`. `merge` gathers every task's images, in
//! output-name order, into `results.zip`, and their rows into
//! `summary.csv`.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use tessera_processor_sdk::{
    Error, Job, Level, Params, Processor, Task, TaskResult, export_processor, input_path, log,
    output_path, progress,
};
use tessera_sample_imageproc_model::{
    ImageParams, ResultsZip, SummaryRow, output_name, preview_name, process_image, summary_csv,
};

/// A task's summary rows, as JSON.
const ROWS_FILE: &str = "intermediate/rows.json";
/// Where a task writes its images.
const IMAGES_DIR: &str = "images";
/// Where a task writes its thumbnails.
const PREVIEWS_DIR: &str = "previews";

struct ImageProcessor;

impl Processor for ImageProcessor {
    fn process(task: Task) -> Result<(), Error> {
        let params = image_params(task.job_parameters())?;
        let mut rows = Vec::with_capacity(task.inputs.len());
        for (i, input) in task.inputs.iter().enumerate() {
            let bytes = fs::read(input_path(&input.name))
                .map_err(|e| Error::new(format!("{}: {e}", input.name)))?;
            let processed = process_image(&bytes, &params)
                .map_err(|e| Error::new(format!("{}: {e}", input.name)))?;
            let output = output_name(&input.name, params.format);
            write(
                &output_path(&format!("{IMAGES_DIR}/{output}")),
                &processed.bytes,
            )?;
            write(
                &output_path(&format!("{PREVIEWS_DIR}/{}", preview_name(&output))),
                &processed.preview,
            )?;
            rows.push(SummaryRow::new(
                &input.name,
                &output,
                bytes.len() as u64,
                &processed,
            ));
            progress((i + 1) as f32 / task.inputs.len() as f32);
        }
        write(&output_path(ROWS_FILE), &serde_json::to_vec(&rows)?)?;
        Ok(())
    }

    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        image_params(job.parameters())?;
        let mut rows: Vec<(String, SummaryRow)> = Vec::new();
        for task in &tasks {
            let path = task.output_path(ROWS_FILE);
            let bytes =
                fs::read(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            let task_rows: Vec<SummaryRow> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            rows.extend(task_rows.into_iter().map(|r| (task.name.clone(), r)));
        }
        rows.sort_by(|a, b| a.1.output.cmp(&b.1.output));

        let file = File::create(output_path("results.zip"))?;
        let mut zip = ResultsZip::new(BufWriter::new(file));
        for (i, (task, row)) in rows.iter().enumerate() {
            let path = Path::new(tessera_processor_sdk::INPUTS_DIR)
                .join(task)
                .join(IMAGES_DIR)
                .join(&row.output);
            let bytes =
                fs::read(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            zip.add(&row.output, &bytes)?;
            progress((i + 1) as f32 / rows.len() as f32);
        }
        zip.finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;

        let rows: Vec<SummaryRow> = rows.into_iter().map(|(_, r)| r).collect();
        fs::write(output_path("summary.csv"), summary_csv(&rows))?;
        let (input, output) = rows.iter().fold((0u64, 0u64), |(i, o), r| {
            (i + r.input_bytes, o + r.output_bytes)
        });
        log(
            Level::Info,
            &format!(
                "{} images: {input} bytes in, {output} bytes out",
                rows.len()
            ),
        );
        Ok(())
    }
}

export_processor!(ImageProcessor);

fn image_params(params: &Params) -> Result<ImageParams, Error> {
    let params: ImageParams = params.deserialize()?;
    params.validate()?;
    Ok(params)
}

/// Writes `bytes` to `path`, creating its folders.
fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes).map_err(|e| Error::new(format!("{}: {e}", path.display())))
}
