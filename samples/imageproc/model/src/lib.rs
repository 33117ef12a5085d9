//! The model behind the `imageproc` sample: a batch of PNG and JPEG images
//! resized, filtered and converted, with the same bytes natively and in
//! WebAssembly.
//!
//! Each image goes through [`process_image`]: decode (PNG or JPEG, by
//! signature), resize to `width` pixels keeping the aspect ratio (Triangle
//! filter), apply the [`Filter`] (`none`, `grayscale`, `blur` with `sigma`,
//! `edges`), encode as the [`Format`] (`png` or `jpeg` at `quality`), and
//! make a PNG thumbnail. A job's results are the processed images in
//! `results.zip` ([`ResultsZip`]) and one [`SummaryRow`] per image in
//! `summary.csv` ([`summary_csv`]); [`process_job`] computes them all
//! natively on several threads, and [`generate_images`] makes test inputs.
//!
//! Every step uses integer arithmetic, or `f32`/`f64` additions and
//! multiplications (resizing), or `libm` (the blur kernel), and the JPEG
//! decoder runs its portable code: see [`pipeline`](crate::process_image)'s
//! notes. So a job's outputs do not depend on the platform nor on how the
//! images were split into tasks.

mod generate;
mod job;
mod params;
mod pipeline;

pub use generate::generate_images;
pub use job::{
    JobOutput, ResultsZip, SUMMARY_HEADER, SummaryRow, process_job, sha256_hex, summary_csv,
};
pub use params::{
    Filter, Format, ImageParams, MAX_INPUT_PIXELS, MAX_WIDTH, SIGMA_RANGE, output_name,
    output_names, preview_name,
};
pub use pipeline::{
    InputFormat, PREVIEW_WIDTH, Processed, blur_planes, decode, encode, gaussian_kernel, luma_of,
    preview, process_image, scaled_height, sniff, sobel,
};
