//! The job's parameters and the tile grid they define.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most frames a job may have.
pub const MAX_FRAMES: u32 = 1000;
/// Largest frame width or height, in pixels.
pub const MAX_SIDE: u32 = 4096;
/// Smallest frame width or height, in pixels.
pub const MIN_SIDE: u32 = 8;
/// Smallest tile size, in pixels.
pub const MIN_TILE: u32 = 16;
/// Most samples per pixel.
pub const MAX_SAMPLES: u32 = 64;
/// Deepest reflection recursion.
pub const MAX_DEPTH: u32 = 16;
/// Most tasks (frames × tiles per frame) a job may be split into.
pub const MAX_TASKS: u64 = 10_000;

/// The parameters of a render job (the application's parameters, with the
/// defaults of `assembly.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderParams {
    /// Number of frames of the animation; the camera makes one full turn
    /// around the scene over them.
    #[serde(default = "default_frames")]
    pub frames: u32,
    /// Frame width in pixels.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Frame height in pixels.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Frames wider or taller than this are split into square tiles of this
    /// size (edge tiles are smaller); one task renders one tile.
    #[serde(default = "default_tile_size")]
    pub tile_size: u32,
    /// Rays per pixel; more than one are jittered deterministically inside
    /// the pixel and averaged.
    #[serde(default = "default_samples")]
    pub samples_per_pixel: u32,
    /// How many reflections a ray may follow.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
}

fn default_frames() -> u32 {
    8
}
fn default_width() -> u32 {
    320
}
fn default_height() -> u32 {
    240
}
fn default_tile_size() -> u32 {
    128
}
fn default_samples() -> u32 {
    1
}
fn default_max_depth() -> u32 {
    4
}

impl Default for RenderParams {
    fn default() -> Self {
        Self {
            frames: default_frames(),
            width: default_width(),
            height: default_height(),
            tile_size: default_tile_size(),
            samples_per_pixel: default_samples(),
            max_depth: default_max_depth(),
        }
    }
}

/// Parameters out of their allowed ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError(pub String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

fn check(name: &str, value: u32, min: u32, max: u32) -> Result<(), ParamError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ParamError(format!(
            "`{name}` must be between {min} and {max}, not {value}"
        )))
    }
}

/// A rectangle of a frame, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// Number of pixels.
    pub fn area(&self) -> usize {
        self.w as usize * self.h as usize
    }
}

impl RenderParams {
    /// Checks every parameter's range and the number of tasks.
    pub fn validate(&self) -> Result<(), ParamError> {
        check("frames", self.frames, 1, MAX_FRAMES)?;
        check("width", self.width, MIN_SIDE, MAX_SIDE)?;
        check("height", self.height, MIN_SIDE, MAX_SIDE)?;
        check("tile_size", self.tile_size, MIN_TILE, MAX_SIDE)?;
        check("samples_per_pixel", self.samples_per_pixel, 1, MAX_SAMPLES)?;
        check("max_depth", self.max_depth, 0, MAX_DEPTH)?;
        let tasks = u64::from(self.frames) * self.tiles().len() as u64;
        if tasks > MAX_TASKS {
            return Err(ParamError(format!(
                "{} frames of {} tiles each ({}x{} pixels in tiles of {}) make {tasks} tasks; \
                 at most {MAX_TASKS} are allowed: raise `tile_size` or lower `frames`",
                self.frames,
                self.tiles().len(),
                self.width,
                self.height,
                self.tile_size
            )));
        }
        Ok(())
    }

    /// The whole frame.
    pub fn frame_rect(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            w: self.width,
            h: self.height,
        }
    }

    /// The tiles of a frame, row by row: squares of `tile_size`, smaller at
    /// the right and bottom edges; one tile when the frame fits in one.
    pub fn tiles(&self) -> Vec<Rect> {
        let size = self.tile_size.max(1);
        let mut tiles = Vec::new();
        let mut y = 0;
        while y < self.height {
            let h = size.min(self.height - y);
            let mut x = 0;
            while x < self.width {
                let w = size.min(self.width - x);
                tiles.push(Rect { x, y, w, h });
                x += w;
            }
            y += h;
        }
        tiles
    }
}

/// The name of the task that renders tile `tile` of frame `frame`.
pub fn tile_task_name(frame: u32, tile: usize) -> String {
    format!("frame-{frame:04}-tile-{tile:04}")
}

/// The path (under `/output`) of frame `frame`'s PNG in the job's outputs.
pub fn frame_file_name(frame: u32) -> String {
    format!("frames/frame-{frame:04}.png")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_frame_exactly_once() {
        for (w, h, t) in [(320, 240, 128), (100, 37, 16), (64, 64, 64), (50, 20, 4096)] {
            let p = RenderParams {
                width: w,
                height: h,
                tile_size: t,
                ..RenderParams::default()
            };
            let mut hits = vec![0u8; (w * h) as usize];
            for r in p.tiles() {
                assert!(r.w >= 1 && r.w <= t && r.h >= 1 && r.h <= t);
                for y in r.y..r.y + r.h {
                    for x in r.x..r.x + r.w {
                        hits[(y * w + x) as usize] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&n| n == 1), "{w}x{h}/{t}");
            let expected = w.div_ceil(t) * h.div_ceil(t);
            assert_eq!(p.tiles().len() as u32, expected);
        }
    }

    #[test]
    fn defaults_apply_and_validate() {
        let p: RenderParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RenderParams::default());
        p.validate().unwrap();
        assert_eq!(p.tiles().len(), 3 * 2);
    }

    #[test]
    fn bad_parameters_are_named() {
        let p = RenderParams {
            samples_per_pixel: 0,
            ..RenderParams::default()
        };
        assert!(p.validate().unwrap_err().0.contains("`samples_per_pixel`"));
        let p = RenderParams {
            width: 4096,
            height: 4096,
            tile_size: 16,
            ..RenderParams::default()
        };
        let err = p.validate().unwrap_err().0;
        assert!(
            err.contains("tasks") && err.contains("`tile_size`"),
            "{err}"
        );
    }
}
