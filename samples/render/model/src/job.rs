//! Rendering tiles, frames and whole jobs.

use std::sync::Mutex;

use crate::encode::{EncodingError, JobAssembler};
use crate::image::Image;
use crate::params::{Rect, RenderParams, frame_file_name};
use crate::tracer::Scene;

/// The job output holding the animated PNG of every frame.
pub const ANIMATION_FILE: &str = "animation.png";
/// The job output holding the contact sheet (a preview).
pub const CONTACT_SHEET_FILE: &str = "previews/contact-sheet.png";
/// A tile task's output: the tile's raw RGB8 rows (an intermediate).
pub const TILE_FILE: &str = "intermediate/tile.rgb";
/// A tile task's preview: the tile's [`thumbnail`](crate::thumbnail) as a
/// PNG, for a portal to show while the job runs.
pub const TILE_PREVIEW_FILE: &str = "previews/tile.png";

/// Renders `rect` of frame `frame`: `rect.w × rect.h × 3` bytes, RGB8 rows.
/// A pixel's value does not depend on the tile it is rendered in.
pub fn render_tile(params: &RenderParams, frame: u32, rect: Rect) -> Vec<u8> {
    let mut out = vec![0; rect.area() * 3];
    Scene::new(params, frame).render_into(rect, &mut out);
    out
}

/// Renders the whole frame `frame`.
pub fn render_frame(params: &RenderParams, frame: u32) -> Image {
    let rect = params.frame_rect();
    Image {
        width: rect.w,
        height: rect.h,
        pixels: render_tile(params, frame, rect),
    }
}

/// Renders every frame of the job natively on `threads` OS threads (rows of
/// all frames are handed out one at a time). The frames are identical to
/// [`render_frame`]'s, whatever `threads`.
pub fn render_job(params: &RenderParams, threads: usize) -> Vec<Image> {
    let scenes: Vec<Scene> = (0..params.frames).map(|f| Scene::new(params, f)).collect();
    let mut frames: Vec<Image> = (0..params.frames)
        .map(|_| Image::new(params.width, params.height))
        .collect();
    let row_len = params.width as usize * 3;
    let rows: Vec<(usize, u32, &mut [u8])> = frames
        .iter_mut()
        .enumerate()
        .flat_map(|(f, img)| {
            img.pixels
                .chunks_exact_mut(row_len)
                .enumerate()
                .map(move |(y, row)| (f, y as u32, row))
        })
        .collect();
    let queue = Mutex::new(rows.into_iter());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("row queue").next();
                    let Some((f, y, row)) = next else { break };
                    scenes[f].render_row(0, y, row);
                }
            });
        }
    });
    frames
}

/// The job's output files, as the merge step writes them, from its frames in
/// order: `frames/frame-NNNN.png` for each, [`ANIMATION_FILE`] and
/// [`CONTACT_SHEET_FILE`].
pub fn job_files(frames: &[Image]) -> Result<Vec<(String, Vec<u8>)>, EncodingError> {
    let first = frames.first().expect("at least one frame");
    let mut animation = Vec::new();
    let mut files = Vec::with_capacity(frames.len() + 2);
    let mut assembler = JobAssembler::new(
        first.width,
        first.height,
        frames.len() as u32,
        &mut animation,
    )?;
    for (i, frame) in frames.iter().enumerate() {
        files.push((frame_file_name(i as u32), assembler.add_frame(frame)?));
    }
    let sheet = assembler.finish()?;
    files.push((ANIMATION_FILE.to_string(), animation));
    files.push((CONTACT_SHEET_FILE.to_string(), sheet));
    Ok(files)
}

/// The whole job natively: [`render_job`] on `threads` threads, then
/// [`job_files`]; what the distributed job computes, for benchmarks.
pub fn render_job_files(
    params: &RenderParams,
    threads: usize,
) -> Result<Vec<(String, Vec<u8>)>, EncodingError> {
    job_files(&render_job(params, threads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::decode_png;

    fn small() -> RenderParams {
        RenderParams {
            frames: 3,
            width: 40,
            height: 30,
            tile_size: 16,
            samples_per_pixel: 2,
            max_depth: 3,
        }
    }

    #[test]
    fn tiles_stitch_into_the_whole_frame() {
        let p = small();
        for frame in 0..p.frames {
            let whole = render_frame(&p, frame);
            let mut stitched = Image::new(p.width, p.height);
            for rect in p.tiles() {
                stitched.blit(rect, &render_tile(&p, frame, rect));
            }
            assert_eq!(stitched, whole);
            // Pixel by pixel too: a tile is just its pixels.
            let s = Scene::new(&p, frame);
            assert_eq!(whole.get(17, 9), s.pixel(17, 9));
        }
    }

    #[test]
    fn threads_do_not_change_the_frames() {
        let p = small();
        let one = render_job(&p, 1);
        assert_eq!(one.len(), 3);
        for (f, img) in one.iter().enumerate() {
            assert_eq!(*img, render_frame(&p, f as u32));
        }
        assert_eq!(render_job(&p, 3), one);
        assert_ne!(one[0], one[1], "the camera moves");
    }

    #[test]
    fn samples_average_jittered_rays() {
        let p = RenderParams {
            samples_per_pixel: 4,
            ..small()
        };
        let one = RenderParams {
            samples_per_pixel: 1,
            ..small()
        };
        // Antialiasing changes some pixels (edges) and not flat ones.
        let a = render_frame(&p, 0);
        let b = render_frame(&one, 0);
        assert_ne!(a, b);
        let differing = a
            .pixels
            .iter()
            .zip(&b.pixels)
            .filter(|(x, y)| x != y)
            .count();
        assert!(differing < a.pixels.len(), "{differing}");
    }

    #[test]
    fn job_files_hold_frames_animation_and_sheet() {
        let p = small();
        let frames = render_job(&p, 2);
        let files = job_files(&frames).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "frames/frame-0000.png",
                "frames/frame-0001.png",
                "frames/frame-0002.png",
                ANIMATION_FILE,
                CONTACT_SHEET_FILE
            ]
        );
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(decode_png(&files[i].1).unwrap(), vec![frame.clone()]);
        }
        assert_eq!(decode_png(&files[3].1).unwrap(), frames);
        let sheet = &decode_png(&files[4].1).unwrap()[0];
        // 2×2 grid of 40×30 thumbnails (factor 1).
        assert_eq!((sheet.width, sheet.height), (2 * 40 + 12, 2 * 30 + 12));
    }
}
