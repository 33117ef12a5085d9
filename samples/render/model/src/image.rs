//! RGB8 images: stitching tiles, thumbnails and the contact sheet, all in
//! integer arithmetic.

use crate::params::Rect;

/// An RGB image, 8 bits per channel, rows top to bottom, no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes.
    pub pixels: Vec<u8>,
}

/// Background of the contact sheet.
pub const SHEET_BACKGROUND: [u8; 3] = [24, 24, 28];
/// Gap between and around the contact sheet's thumbnails, in pixels.
pub const SHEET_GAP: u32 = 4;
/// Largest thumbnail width on the contact sheet.
pub const THUMB_MAX_WIDTH: u32 = 160;
/// Largest thumbnail height on the contact sheet.
pub const THUMB_MAX_HEIGHT: u32 = 120;

impl Image {
    /// A black image.
    pub fn new(width: u32, height: u32) -> Self {
        Self::filled(width, height, [0, 0, 0])
    }

    /// An image of one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for _ in 0..width as usize * height as usize {
            pixels.extend_from_slice(&rgb);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// The pixel at (x, y).
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Copies a `rect.w × rect.h` RGB8 tile to `rect` of this image.
    ///
    /// Panics if the tile's size is wrong or `rect` is not inside the image.
    pub fn blit(&mut self, rect: Rect, tile: &[u8]) {
        assert!(
            rect.x + rect.w <= self.width && rect.y + rect.h <= self.height,
            "tile {rect:?} outside a {}x{} image",
            self.width,
            self.height
        );
        assert_eq!(tile.len(), rect.area() * 3, "tile size");
        let row = rect.w as usize * 3;
        for (dy, src) in tile.chunks_exact(row).enumerate() {
            let start = ((rect.y as usize + dy) * self.width as usize + rect.x as usize) * 3;
            self.pixels[start..start + row].copy_from_slice(src);
        }
    }

    /// The image shrunk by an integer `factor`: each pixel is the rounded
    /// mean of a `factor × factor` block (a partial block at the right or
    /// bottom edge is dropped).
    pub fn downscale(&self, factor: u32) -> Image {
        let factor = factor.max(1);
        let (w, h) = ((self.width / factor).max(1), (self.height / factor).max(1));
        let fx = factor.min(self.width);
        let fy = factor.min(self.height);
        let n = fx * fy;
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        for ty in 0..h {
            for tx in 0..w {
                let mut sum = [0u32; 3];
                for y in ty * fy..ty * fy + fy {
                    for x in tx * fx..tx * fx + fx {
                        let p = self.get(x, y);
                        for c in 0..3 {
                            sum[c] += u32::from(p[c]);
                        }
                    }
                }
                for s in sum {
                    out.push(((s + n / 2) / n) as u8);
                }
            }
        }
        Image {
            width: w,
            height: h,
            pixels: out,
        }
    }
}

/// The factor frames of `width × height` are shrunk by for the contact
/// sheet: the smallest that fits a [`THUMB_MAX_WIDTH`] ×
/// [`THUMB_MAX_HEIGHT`] box.
pub fn thumbnail_factor(width: u32, height: u32) -> u32 {
    width
        .div_ceil(THUMB_MAX_WIDTH)
        .max(height.div_ceil(THUMB_MAX_HEIGHT))
        .max(1)
}

/// The thumbnail of a frame for the contact sheet.
pub fn thumbnail(frame: &Image) -> Image {
    frame.downscale(thumbnail_factor(frame.width, frame.height))
}

/// Lays `thumbs` (all the same size) out in a grid of ⌈√n⌉ columns, in
/// order, row by row, [`SHEET_GAP`] pixels apart on [`SHEET_BACKGROUND`].
pub fn contact_sheet(thumbs: &[Image]) -> Image {
    let Some(first) = thumbs.first() else {
        return Image::filled(1, 1, SHEET_BACKGROUND);
    };
    let n = thumbs.len() as u32;
    let mut columns = 1;
    while columns * columns < n {
        columns += 1;
    }
    let rows = n.div_ceil(columns);
    let (tw, th) = (first.width, first.height);
    let mut sheet = Image::filled(
        columns * tw + (columns + 1) * SHEET_GAP,
        rows * th + (rows + 1) * SHEET_GAP,
        SHEET_BACKGROUND,
    );
    for (i, thumb) in thumbs.iter().enumerate() {
        let (c, r) = (i as u32 % columns, i as u32 / columns);
        sheet.blit(
            Rect {
                x: SHEET_GAP + c * (tw + SHEET_GAP),
                y: SHEET_GAP + r * (th + SHEET_GAP),
                w: thumb.width,
                h: thumb.height,
            },
            &thumb.pixels,
        );
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Image {
        let mut img = Image::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 3) as usize;
                img.pixels[i] = (x * 7 % 256) as u8;
                img.pixels[i + 1] = (y * 13 % 256) as u8;
                img.pixels[i + 2] = ((x + y) % 256) as u8;
            }
        }
        img
    }

    #[test]
    fn blit_copies_rows_in_place() {
        let mut img = Image::new(5, 4);
        let tile: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8 + 1).collect();
        img.blit(
            Rect {
                x: 2,
                y: 1,
                w: 2,
                h: 3,
            },
            &tile,
        );
        assert_eq!(img.get(2, 1), [1, 2, 3]);
        assert_eq!(img.get(3, 1), [4, 5, 6]);
        assert_eq!(img.get(2, 3), [13, 14, 15]);
        assert_eq!(img.get(3, 3), [16, 17, 18]);
        assert_eq!(img.get(1, 1), [0, 0, 0]);
        assert_eq!(img.get(4, 3), [0, 0, 0]);
    }

    #[test]
    fn downscale_averages_blocks() {
        let img = gradient(9, 7);
        let small = img.downscale(3);
        assert_eq!((small.width, small.height), (3, 2));
        for ty in 0..2 {
            for tx in 0..3 {
                for c in 0..3 {
                    let mut total = 0.0;
                    for y in 0..3 {
                        for x in 0..3 {
                            total += f64::from(img.get(tx * 3 + x, ty * 3 + y)[c]);
                        }
                    }
                    let expected = (total / 9.0).round() as u8;
                    assert_eq!(small.get(tx, ty)[c], expected);
                }
            }
        }
        assert_eq!(img.downscale(1), img);
    }

    #[test]
    fn contact_sheet_places_thumbnails_in_a_grid() {
        let thumbs: Vec<Image> = (0..5u8).map(|i| Image::filled(4, 3, [i, i, i])).collect();
        let sheet = contact_sheet(&thumbs);
        // 3 columns, 2 rows.
        assert_eq!(sheet.width, 3 * 4 + 4 * SHEET_GAP);
        assert_eq!(sheet.height, 2 * 3 + 3 * SHEET_GAP);
        for (i, _) in thumbs.iter().enumerate() {
            let (c, r) = (i as u32 % 3, i as u32 / 3);
            let x = SHEET_GAP + c * (4 + SHEET_GAP);
            let y = SHEET_GAP + r * (3 + SHEET_GAP);
            assert_eq!(sheet.get(x, y), [i as u8; 3]);
            assert_eq!(sheet.get(x + 3, y + 2), [i as u8; 3]);
        }
        assert_eq!(sheet.get(0, 0), SHEET_BACKGROUND);
        assert_eq!(
            sheet.get(sheet.width - 1, sheet.height - 1),
            SHEET_BACKGROUND
        );
        assert_eq!(thumbnail_factor(320, 240), 2);
        assert_eq!(thumbnail_factor(100, 50), 1);
        assert_eq!(thumbnail_factor(1920, 1080), 12);
    }
}
