//! Synthetic input images: gradients with discs and rectangles, as PNG and
//! JPEG files, the same for the same seed on every platform.

use image::{DynamicImage, RgbImage, RgbaImage};

use crate::params::Format;
use crate::pipeline::encode;

/// SplitMix64: a small generator of well-mixed 64-bit values.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo)) as u32
    }

    fn colour(&mut self) -> [u8; 3] {
        let v = self.next();
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    }
}

enum Shape {
    Disc { cx: i64, cy: i64, r: i64 },
    Rect { x0: u32, y0: u32, x1: u32, y1: u32 },
}

impl Shape {
    fn contains(&self, x: u32, y: u32) -> bool {
        match *self {
            Shape::Disc { cx, cy, r } => {
                let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
                dx * dx + dy * dy <= r * r
            }
            Shape::Rect { x0, y0, x1, y1 } => (x0..x1).contains(&x) && (y0..y1).contains(&y),
        }
    }
}

/// `count` images made from `seed`: `img-000.png`, `img-001.jpg`, … —
/// even indices are PNG (every fourth one with an alpha channel), odd ones
/// JPEG (quality 90); 160 to 639 pixels wide, 120 to 479 high, each a
/// two-colour gradient under a few discs and rectangles.
pub fn generate_images(seed: u64, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let mut rng = SplitMix64(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let (w, h) = (rng.range(160, 640), rng.range(120, 480));
            let (from, to) = (rng.colour(), rng.colour());
            let shapes: Vec<(Shape, [u8; 3])> = (0..rng.range(3, 8))
                .map(|_| {
                    let shape = if rng.next().is_multiple_of(2) {
                        Shape::Disc {
                            cx: i64::from(rng.range(0, w)),
                            cy: i64::from(rng.range(0, h)),
                            r: i64::from(rng.range(5, h / 3 + 6)),
                        }
                    } else {
                        let (x0, y0) = (rng.range(0, w), rng.range(0, h));
                        Shape::Rect {
                            x0,
                            y0,
                            x1: x0 + rng.range(4, w / 2 + 5),
                            y1: y0 + rng.range(4, h / 2 + 5),
                        }
                    };
                    (shape, rng.colour())
                })
                .collect();
            let pixel = |x: u32, y: u32| -> [u8; 3] {
                if let Some((_, c)) = shapes.iter().rev().find(|(s, _)| s.contains(x, y)) {
                    return *c;
                }
                // Diagonal gradient from `from` to `to`.
                let t = u64::from(x + y);
                let span = u64::from(w + h - 2).max(1);
                std::array::from_fn(|k| {
                    let (a, b) = (u64::from(from[k]), u64::from(to[k]));
                    ((a * (span - t) + b * t) / span) as u8
                })
            };
            let png = i % 2 == 0;
            let image = if png && i % 4 == 0 {
                DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| {
                    let [r, g, b] = pixel(x, y);
                    image::Rgba([r, g, b, (255 - (x * 128 / w)) as u8])
                }))
            } else {
                DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| image::Rgb(pixel(x, y))))
            };
            let (format, extension) = if png {
                (Format::Png, "png")
            } else {
                (Format::Jpeg, "jpg")
            };
            let bytes = encode(&image, format, 90).expect("encoding to memory cannot fail");
            (format!("img-{i:03}.{extension}"), bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{InputFormat, decode, sniff};

    #[test]
    fn images_are_reproducible_and_decodable() {
        let a = generate_images(5, 6);
        assert_eq!(a, generate_images(5, 6));
        assert_ne!(a, generate_images(6, 6));
        assert_eq!(generate_images(5, 3), a[..3]);
        for (i, (name, bytes)) in a.iter().enumerate() {
            let expected = if i % 2 == 0 {
                InputFormat::Png
            } else {
                InputFormat::Jpeg
            };
            assert_eq!(sniff(bytes), Some(expected), "{name}");
            let image = decode(bytes).unwrap();
            assert!((160..640).contains(&image.width()), "{name}");
            assert!((120..480).contains(&image.height()), "{name}");
            assert_eq!(image.color().has_alpha(), i % 4 == 0, "{name}");
        }
    }
}
