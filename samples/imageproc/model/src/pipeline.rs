//! Decode → resize → filter → encode, for one image.
//!
//! Every step gives the same bytes natively and in WebAssembly:
//!
//! - JPEG is decoded by `zune-jpeg` with its platform intrinsics switched
//!   off (`set_use_unsafe(false)`), so x86 and wasm run the same scalar code;
//!   PNG by the `png` crate (integer code);
//! - resizing is `image`'s separable Triangle filter: `f32` additions and
//!   multiplications only (no transcendental function, no fused multiply-add);
//! - the filters below use integer arithmetic; the blur's kernel weights are
//!   computed once with `libm::exp` and rounded to integers;
//! - the encoders (`png`, `image`'s JPEG encoder) are integer code.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{PngDecoder, PngEncoder};
use image::imageops::FilterType;
use image::{
    DynamicImage, ExtendedColorType, GrayAlphaImage, GrayImage, ImageDecoder, ImageEncoder,
    RgbImage, RgbaImage,
};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use crate::params::{Filter, Format, ImageParams, MAX_INPUT_PIXELS};

/// The width of the preview images, in pixels (narrower outputs keep theirs).
pub const PREVIEW_WIDTH: u32 = 96;

/// The resampling filter of every resize.
const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// Fixed-point precision of the blur kernel weights.
const BLUR_SHIFT: u32 = 16;

/// The kind of an input file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// A PNG image.
    Png,
    /// A JPEG image.
    Jpeg,
}

/// The kind of `bytes` from its signature, if it is a PNG or JPEG image.
pub fn sniff(bytes: &[u8]) -> Option<InputFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(InputFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(InputFormat::Jpeg)
    } else {
        None
    }
}

/// One processed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// Width of the input image.
    pub input_width: u32,
    /// Height of the input image.
    pub input_height: u32,
    /// Width of the output image.
    pub output_width: u32,
    /// Height of the output image.
    pub output_height: u32,
    /// The encoded output image.
    pub bytes: Vec<u8>,
    /// A PNG thumbnail of the output, [`PREVIEW_WIDTH`] pixels wide at most.
    pub preview: Vec<u8>,
}

/// Decodes a PNG or JPEG image, resizes it to `params.width` (keeping the
/// aspect ratio), applies `params.filter` and encodes it as
/// `params.format`; also makes a PNG thumbnail of the result.
///
/// The error says what is wrong with the image, without naming it.
pub fn process_image(bytes: &[u8], params: &ImageParams) -> Result<Processed, String> {
    let image = decode(bytes)?;
    let (input_width, input_height) = (image.width(), image.height());
    let height = scaled_height(input_width, input_height, params.width);
    let resized = normalise(image.resize_exact(params.width, height, RESIZE_FILTER));
    let output = apply_filter(resized, params);
    let bytes = encode(&output, params.format, params.quality)?;
    let preview = preview(&output)?;
    Ok(Processed {
        input_width,
        input_height,
        output_width: output.width(),
        output_height: output.height(),
        bytes,
        preview,
    })
}

/// The height of a `width`-wide image with the aspect ratio of a `w`×`h`
/// one, rounded to the nearest pixel, at least 1.
pub fn scaled_height(w: u32, h: u32, width: u32) -> u32 {
    let (w, h, width) = (u64::from(w), u64::from(h), u64::from(width));
    let height = (2 * h * width + w) / (2 * w);
    u32::try_from(height.max(1)).unwrap_or(u32::MAX)
}

/// Decodes a PNG or JPEG image into 8-bit luma, luma+alpha, RGB or RGBA.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    let image = match sniff(bytes) {
        Some(InputFormat::Png) => decode_png(bytes)?,
        Some(InputFormat::Jpeg) => decode_jpeg(bytes)?,
        None if bytes.is_empty() => return Err("the file is empty".into()),
        None => return Err("not a PNG or JPEG image (unknown signature)".into()),
    };
    Ok(normalise(image))
}

fn check_size(width: u64, height: u64) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("the image is empty ({width}×{height})"));
    }
    if width * height > MAX_INPUT_PIXELS {
        return Err(format!(
            "the image is too large: {width}×{height} pixels, at most {MAX_INPUT_PIXELS} are accepted"
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<DynamicImage, String> {
    let bad = |e: image::ImageError| format!("cannot decode the PNG image: {e}");
    let decoder = PngDecoder::new(Cursor::new(bytes)).map_err(bad)?;
    let (w, h) = decoder.dimensions();
    check_size(w.into(), h.into())?;
    DynamicImage::from_decoder(decoder).map_err(bad)
}

fn decode_jpeg(bytes: &[u8]) -> Result<DynamicImage, String> {
    let bad = |e: zune_jpeg::errors::DecodeErrors| format!("cannot decode the JPEG image: {e}");
    let options = DecoderOptions::default()
        .set_use_unsafe(false)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(bad)?;
    let (w, h) = decoder
        .dimensions()
        .ok_or("cannot decode the JPEG image: no frame header")?;
    check_size(w as u64, h as u64)?;
    let grey = decoder.input_colorspace() == Some(ColorSpace::Luma);
    if grey {
        let options = decoder.options().jpeg_set_out_colorspace(ColorSpace::Luma);
        decoder.set_options(options);
    }
    let pixels = decoder.decode().map_err(bad)?;
    let (w, h) = (w as u32, h as u32);
    let short = || "cannot decode the JPEG image: short pixel buffer".to_string();
    Ok(if grey {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, pixels).ok_or_else(short)?)
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels).ok_or_else(short)?)
    })
}

/// Brings any decoded image to one of the four 8-bit layouts.
fn normalise(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => image,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(image.to_luma_alpha8()),
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

fn apply_filter(image: DynamicImage, params: &ImageParams) -> DynamicImage {
    match params.filter {
        Filter::None => image,
        Filter::Grayscale => grayscale(image),
        Filter::Blur => blur(image, params.sigma),
        Filter::Edges => DynamicImage::ImageLuma8(sobel(&luma(&image))),
    }
}

/// Rec. 709 luma of an RGB pixel, rounded: (2126 R + 7152 G + 722 B) / 10000.
pub fn luma_of(r: u8, g: u8, b: u8) -> u8 {
    let sum = 2126 * u32::from(r) + 7152 * u32::from(g) + 722 * u32::from(b);
    ((sum + 5000) / 10000) as u8
}

/// The luma plane of an 8-bit image (alpha dropped).
fn luma(image: &DynamicImage) -> GrayImage {
    match image {
        DynamicImage::ImageLuma8(img) => img.clone(),
        DynamicImage::ImageLumaA8(img) => GrayImage::from_fn(img.width(), img.height(), |x, y| {
            image::Luma([img.get_pixel(x, y)[0]])
        }),
        DynamicImage::ImageRgb8(img) => {
            let data = img
                .as_raw()
                .chunks_exact(3)
                .map(|p| luma_of(p[0], p[1], p[2]));
            GrayImage::from_raw(img.width(), img.height(), data.collect()).expect("same size")
        }
        DynamicImage::ImageRgba8(img) => {
            let data = img
                .as_raw()
                .chunks_exact(4)
                .map(|p| luma_of(p[0], p[1], p[2]));
            GrayImage::from_raw(img.width(), img.height(), data.collect()).expect("same size")
        }
        other => luma(&normalise(other.clone())),
    }
}

fn grayscale(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgba8(img) => {
            let data = img
                .as_raw()
                .chunks_exact(4)
                .flat_map(|p| [luma_of(p[0], p[1], p[2]), p[3]]);
            DynamicImage::ImageLumaA8(
                GrayAlphaImage::from_raw(img.width(), img.height(), data.collect())
                    .expect("same size"),
            )
        }
        DynamicImage::ImageLumaA8(_) => image,
        other => DynamicImage::ImageLuma8(luma(&other)),
    }
}

/// The Sobel gradient magnitude √(gx² + gy²) of `src`, rounded down and
/// clamped to 255; pixels outside the image repeat the border.
pub fn sobel(src: &GrayImage) -> GrayImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let px = src.as_raw();
    let at = |x: usize, y: usize| i32::from(px[y * w + x]);
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let (ya, yb) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            let (xa, xb) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let gx = (at(xb, ya) + 2 * at(xb, y) + at(xb, yb))
                - (at(xa, ya) + 2 * at(xa, y) + at(xa, yb));
            let gy = (at(xa, yb) + 2 * at(x, yb) + at(xb, yb))
                - (at(xa, ya) + 2 * at(x, ya) + at(xb, ya));
            let magnitude = ((gx * gx + gy * gy) as u32).isqrt();
            out[y * w + x] = magnitude.min(255) as u8;
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out).expect("same size")
}

/// The integer gaussian kernel of `sigma`: 2r + 1 weights, r = ⌈3σ⌉, that
/// sum to exactly 2^16 (the rounding remainder goes to the centre).
pub fn gaussian_kernel(sigma: f64) -> Vec<u32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let denominator = 2.0 * sigma * sigma;
    let exact: Vec<f64> = (-radius..=radius)
        .map(|i| libm::exp(-((i * i) as f64) / denominator))
        .collect();
    let total: f64 = exact.iter().sum();
    let scale = f64::from(1u32 << BLUR_SHIFT);
    let mut weights: Vec<i64> = exact
        .iter()
        .map(|w| (w / total * scale + 0.5).floor() as i64)
        .collect();
    let sum: i64 = weights.iter().sum();
    weights[radius as usize] += (1i64 << BLUR_SHIFT) - sum;
    weights.into_iter().map(|w| w as u32).collect()
}

fn blur(image: DynamicImage, sigma: f64) -> DynamicImage {
    let kernel = gaussian_kernel(sigma);
    match image {
        DynamicImage::ImageLuma8(img) => {
            let (w, h) = img.dimensions();
            let data = blur_planes(img.into_raw(), w as usize, h as usize, 1, &kernel);
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, data).expect("same size"))
        }
        DynamicImage::ImageLumaA8(img) => {
            let (w, h) = img.dimensions();
            let data = blur_planes(img.into_raw(), w as usize, h as usize, 2, &kernel);
            DynamicImage::ImageLumaA8(GrayAlphaImage::from_raw(w, h, data).expect("same size"))
        }
        DynamicImage::ImageRgb8(img) => {
            let (w, h) = img.dimensions();
            let data = blur_planes(img.into_raw(), w as usize, h as usize, 3, &kernel);
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, data).expect("same size"))
        }
        DynamicImage::ImageRgba8(img) => {
            let (w, h) = img.dimensions();
            let data = blur_planes(img.into_raw(), w as usize, h as usize, 4, &kernel);
            DynamicImage::ImageRgba8(RgbaImage::from_raw(w, h, data).expect("same size"))
        }
        other => blur(normalise(other), sigma),
    }
}

/// Separable convolution of interleaved 8-bit samples (`c` per pixel) with
/// `kernel` (weights summing to 2^16), horizontally then vertically, each
/// pass rounded to 8 bits; outside pixels repeat the border.
pub fn blur_planes(src: Vec<u8>, w: usize, h: usize, c: usize, kernel: &[u32]) -> Vec<u8> {
    let r = kernel.len() / 2;
    let round = 1u32 << (BLUR_SHIFT - 1);
    let stride = w * c;
    // Horizontal pass, one padded row at a time.
    let mut horizontal = vec![0u8; src.len()];
    let mut padded = vec![0u8; (w + 2 * r) * c];
    for (row, out) in src
        .chunks_exact(stride)
        .zip(horizontal.chunks_exact_mut(stride))
    {
        for (x, px) in padded.chunks_exact_mut(c).enumerate() {
            let sx = x.saturating_sub(r).min(w - 1);
            px.copy_from_slice(&row[sx * c..sx * c + c]);
        }
        for (x, out_px) in out.chunks_exact_mut(c).enumerate() {
            for (ch, out_sample) in out_px.iter_mut().enumerate() {
                let mut acc = round;
                for (k, &weight) in kernel.iter().enumerate() {
                    acc += weight * u32::from(padded[(x + k) * c + ch]);
                }
                *out_sample = (acc >> BLUR_SHIFT) as u8;
            }
        }
    }
    // Vertical pass, one output row at a time.
    let mut out = src;
    let mut acc = vec![0u32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        acc.fill(round);
        for (k, &weight) in kernel.iter().enumerate() {
            let sy = (y + k).saturating_sub(r).min(h - 1);
            let row = &horizontal[sy * stride..(sy + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(row) {
                *a += weight * u32::from(s);
            }
        }
        for (o, a) in out_row.iter_mut().zip(&acc) {
            *o = (a >> BLUR_SHIFT) as u8;
        }
    }
    out
}

/// Encodes an 8-bit image as PNG, or as JPEG at `quality` (alpha dropped).
pub fn encode(image: &DynamicImage, format: Format, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (w, h) = (image.width(), image.height());
    let result = match format {
        Format::Png => {
            PngEncoder::new(&mut out).write_image(image.as_bytes(), w, h, image.color().into())
        }
        Format::Jpeg => {
            let encoder = JpegEncoder::new_with_quality(&mut out, quality);
            match image {
                DynamicImage::ImageLumaA8(img) => {
                    let luma: Vec<u8> = img.as_raw().chunks_exact(2).map(|p| p[0]).collect();
                    encoder.write_image(&luma, w, h, ExtendedColorType::L8)
                }
                DynamicImage::ImageRgba8(img) => {
                    let rgb: Vec<u8> = img
                        .as_raw()
                        .chunks_exact(4)
                        .flat_map(|p| [p[0], p[1], p[2]])
                        .collect();
                    encoder.write_image(&rgb, w, h, ExtendedColorType::Rgb8)
                }
                other => encoder.write_image(other.as_bytes(), w, h, other.color().into()),
            }
        }
    };
    result.map_err(|e| format!("cannot encode the output: {e}"))?;
    Ok(out)
}

/// A PNG thumbnail of `image`, [`PREVIEW_WIDTH`] pixels wide at most.
pub fn preview(image: &DynamicImage) -> Result<Vec<u8>, String> {
    if image.width() <= PREVIEW_WIDTH {
        return encode(image, Format::Png, 100);
    }
    let height = scaled_height(image.width(), image.height(), PREVIEW_WIDTH);
    let small = image.resize_exact(PREVIEW_WIDTH, height, RESIZE_FILTER);
    encode(&small, Format::Png, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(width: u32, filter: Filter, format: Format) -> ImageParams {
        ImageParams {
            width,
            filter,
            format,
            ..ImageParams::default()
        }
    }

    fn png_of(image: &DynamicImage) -> Vec<u8> {
        encode(image, Format::Png, 100).unwrap()
    }

    #[test]
    fn heights_keep_the_aspect_ratio() {
        assert_eq!(scaled_height(400, 300, 200), 150);
        assert_eq!(scaled_height(3, 2, 2), 1); // 1.33 → 1
        assert_eq!(scaled_height(3, 2, 4), 3); // 2.67 → 3
        assert_eq!(scaled_height(1000, 1, 10), 1);
    }

    #[test]
    fn luma_matches_the_float_formula() {
        for (r, g, b) in [
            (0, 0, 0),
            (255, 255, 255),
            (255, 0, 0),
            (10, 200, 99),
            (1, 2, 3),
        ] {
            let exact = 0.2126 * f64::from(r) + 0.7152 * f64::from(g) + 0.0722 * f64::from(b);
            assert_eq!(luma_of(r, g, b), exact.round() as u8, "{r},{g},{b}");
        }
    }

    #[test]
    fn gaussian_kernel_is_normalised_and_symmetric() {
        for sigma in [0.1, 0.5, 1.0, 2.5, 10.0] {
            let k = gaussian_kernel(sigma);
            assert_eq!(k.iter().sum::<u32>(), 1 << 16, "sigma {sigma}");
            let r = k.len() / 2;
            assert_eq!(r as f64, (3.0 * sigma).ceil().max(1.0));
            for i in 0..r {
                assert_eq!(k[i], k[k.len() - 1 - i]);
                assert!(k[i] <= k[i + 1]);
            }
            // Close to the continuous weights.
            let w1 = (-1.0 / (2.0 * sigma * sigma)).exp();
            let ratio = f64::from(k[r + 1]) / f64::from(k[r]);
            assert!((ratio - w1).abs() < 1e-3 || k[r + 1] < 4, "sigma {sigma}");
        }
    }

    #[test]
    fn blur_keeps_flat_images_and_matches_a_direct_convolution() {
        let flat = blur_planes(vec![77; 5 * 4 * 3], 5, 4, 3, &gaussian_kernel(1.5));
        assert!(flat.iter().all(|&v| v == 77));

        // One row: the horizontal pass equals a direct clamped convolution,
        // and the vertical pass of a single row is the identity.
        let row: Vec<u8> = (0..9u8).map(|i| i * 25).collect();
        let k = gaussian_kernel(1.0);
        let r = k.len() as i64 / 2;
        let got = blur_planes(row.clone(), 9, 1, 1, &k);
        for x in 0..9i64 {
            let mut acc = 1u32 << 15;
            for (j, &w) in k.iter().enumerate() {
                let sx = (x + j as i64 - r).clamp(0, 8) as usize;
                acc += w * u32::from(row[sx]);
            }
            assert_eq!(got[x as usize], (acc >> 16) as u8, "x {x}");
        }
    }

    #[test]
    fn sobel_of_a_vertical_step() {
        // Left half 0, right half 100: |gx| = 4·100 at the step, gy = 0.
        let img = GrayImage::from_fn(6, 3, |x, _| image::Luma([if x < 3 { 0 } else { 100 }]));
        let edges = sobel(&img);
        for y in 0..3 {
            let row: Vec<u8> = (0..6).map(|x| edges.get_pixel(x, y)[0]).collect();
            assert_eq!(row, [0, 0, 255, 255, 0, 0]);
        }
        let img = GrayImage::from_fn(6, 3, |x, _| image::Luma([if x < 3 { 0 } else { 40 }]));
        assert_eq!(sobel(&img).get_pixel(2, 1)[0], 160);
    }

    #[test]
    fn processing_decodes_resizes_and_encodes() {
        let src = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 128])
        }));
        for format in [Format::Png, Format::Jpeg] {
            for filter in [Filter::None, Filter::Grayscale, Filter::Blur, Filter::Edges] {
                let out = process_image(&png_of(&src), &params(20, filter, format)).unwrap();
                assert_eq!(
                    (
                        out.input_width,
                        out.input_height,
                        out.output_width,
                        out.output_height
                    ),
                    (40, 30, 20, 15)
                );
                let decoded = decode(&out.bytes).unwrap();
                assert_eq!((decoded.width(), decoded.height()), (20, 15));
                let grey = matches!(filter, Filter::Grayscale | Filter::Edges);
                assert_eq!(decoded.color().channel_count(), if grey { 1 } else { 3 });
                assert_eq!(
                    sniff(&out.bytes).unwrap() == InputFormat::Png,
                    format == Format::Png
                );
                assert_eq!(sniff(&out.preview), Some(InputFormat::Png));
            }
        }
    }

    #[test]
    fn lossless_round_trip_of_an_unresized_png() {
        let src = DynamicImage::ImageRgba8(RgbaImage::from_fn(7, 5, |x, y| {
            image::Rgba([x as u8 * 30, y as u8 * 40, 9, 200 - x as u8])
        }));
        let out = process_image(&png_of(&src), &params(7, Filter::None, Format::Png)).unwrap();
        assert_eq!(decode(&out.bytes).unwrap(), src);
    }

    #[test]
    fn bad_images_are_explained() {
        assert_eq!(decode(b"").unwrap_err(), "the file is empty");
        assert!(decode(b"hello").unwrap_err().contains("not a PNG or JPEG"));
        let mut png = png_of(&DynamicImage::ImageLuma8(GrayImage::new(8, 8)));
        png.truncate(40);
        assert!(
            decode(&png)
                .unwrap_err()
                .starts_with("cannot decode the PNG image")
        );
        assert!(
            decode(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])
                .unwrap_err()
                .starts_with("cannot decode the JPEG image")
        );
    }
}
