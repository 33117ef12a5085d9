//! The model behind the `render` sample: a small deterministic ray tracer
//! that renders an animation, frame by frame and tile by tile.
//!
//! The scene (spheres on a checkered floor, two lights with shadows, mirror
//! reflections) is seen by a camera that circles it once over the `frames`
//! of the animation ([`Scene`]). A job is cut into one task per (frame,
//! tile) ([`RenderParams::tiles`], [`render_tile`]); the merge stitches the
//! tiles into frames and writes each as a PNG, the animated PNG of all of
//! them and a contact sheet ([`JobAssembler`], [`job_files`]).
//!
//! Reproducibility is the point of the design:
//!
//! - a pixel's colour depends only on (parameters, frame, x, y): tiles and
//!   threads change nothing, and samples beyond the first are jittered by a
//!   hash of (frame, x, y, sample) ([`jitter`]);
//! - all arithmetic is `f64` `+ − × ÷` and `sqrt`, with `libm` for `sin`,
//!   `cos`, `tan` and `floor`, summed in a fixed order, and colours are
//!   quantised by one function ([`quantize`]);
//!
//! so the guests (in wasm) and [`render_job`] (natively, on any number of
//! threads) produce the same pixels.

mod encode;
mod image;
mod job;
mod params;
mod tracer;
mod vec3;

pub use encode::{
    ANIMATION_FPS, DecodingError, EncodingError, JobAssembler, decode_png, encode_png,
};
pub use image::{
    Image, SHEET_BACKGROUND, SHEET_GAP, THUMB_MAX_HEIGHT, THUMB_MAX_WIDTH, contact_sheet,
    thumbnail, thumbnail_factor,
};
pub use job::{
    ANIMATION_FILE, CONTACT_SHEET_FILE, TILE_FILE, TILE_PREVIEW_FILE, job_files, render_frame,
    render_job, render_job_files, render_tile,
};
pub use params::{
    MAX_DEPTH, MAX_FRAMES, MAX_SAMPLES, MAX_SIDE, MAX_TASKS, MIN_SIDE, MIN_TILE, ParamError, Rect,
    RenderParams, frame_file_name, tile_task_name,
};
pub use tracer::{Scene, jitter, quantize};
pub use vec3::Vec3;
