//! PNG and animated PNG (APNG) encoding, and decoding for checks.

use std::io::{Cursor, Write};

use png::{BitDepth, ColorType, Compression, Encoder};

use crate::image::{Image, contact_sheet, thumbnail};

pub use png::{DecodingError, EncodingError};

/// Frames per second of the animation.
pub const ANIMATION_FPS: u16 = 12;

/// Encodes an RGB8 image as a PNG.
pub fn encode_png(image: &Image) -> Result<Vec<u8>, EncodingError> {
    let mut out = Vec::with_capacity(image.pixels.len() / 2 + 1024);
    let mut encoder = Encoder::new(&mut out, image.width, image.height);
    encoder.set_color(ColorType::Rgb);
    encoder.set_depth(BitDepth::Eight);
    encoder.set_compression(Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.pixels)?;
    writer.finish()?;
    Ok(out)
}

/// Decodes every frame of a PNG (one) or an APNG (all of its animation
/// frames), as RGB8 images. Only 8-bit RGB full-size frames are expected,
/// which is what this crate writes.
pub fn decode_png(bytes: &[u8]) -> Result<Vec<Image>, DecodingError> {
    let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info()?;
    let count = reader
        .info()
        .animation_control()
        .map_or(1, |a| a.num_frames);
    let size = reader
        .output_buffer_size()
        .expect("an image of a supported size");
    let mut frames = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf)?;
        assert_eq!(
            (info.color_type, info.bit_depth),
            (ColorType::Rgb, BitDepth::Eight),
            "only RGB8 images are decoded"
        );
        buf.truncate(info.buffer_size());
        frames.push(Image {
            width: info.width,
            height: info.height,
            pixels: buf,
        });
    }
    Ok(frames)
}

/// Turns the frames of a job, given in order, into its outputs: each frame
/// as a PNG (returned by [`add_frame`](Self::add_frame)), the animated PNG of
/// all of them (written to `W` as they come) and the contact sheet (returned
/// by [`finish`](Self::finish)). Only thumbnails are kept between frames.
pub struct JobAssembler<W: Write> {
    animation: png::Writer<W>,
    thumbs: Vec<Image>,
    frames: u32,
}

impl<W: Write> JobAssembler<W> {
    /// An assembler for `frames` frames of `width × height`, writing the
    /// animation to `animation`.
    pub fn new(width: u32, height: u32, frames: u32, animation: W) -> Result<Self, EncodingError> {
        let mut encoder = Encoder::new(animation, width, height);
        encoder.set_color(ColorType::Rgb);
        encoder.set_depth(BitDepth::Eight);
        encoder.set_compression(Compression::Fast);
        encoder.set_animated(frames, 0)?;
        encoder.set_frame_delay(1, ANIMATION_FPS)?;
        Ok(Self {
            animation: encoder.write_header()?,
            thumbs: Vec::with_capacity(frames as usize),
            frames,
        })
    }

    /// Adds the next frame to the animation and the contact sheet; returns
    /// its PNG.
    pub fn add_frame(&mut self, frame: &Image) -> Result<Vec<u8>, EncodingError> {
        self.animation.write_image_data(&frame.pixels)?;
        self.thumbs.push(thumbnail(frame));
        encode_png(frame)
    }

    /// Ends the animation (all frames must have been added) and returns the
    /// contact sheet's PNG.
    pub fn finish(self) -> Result<Vec<u8>, EncodingError> {
        assert_eq!(self.thumbs.len(), self.frames as usize, "every frame added");
        self.animation.finish()?;
        encode_png(&contact_sheet(&self.thumbs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_apng_round_trip() {
        let frames: Vec<Image> = (0..3u8)
            .map(|i| {
                let mut img = Image::filled(7, 5, [i * 40, 200 - i, 3]);
                img.pixels[4] = 99;
                img
            })
            .collect();
        let png = encode_png(&frames[0]).unwrap();
        assert_eq!(decode_png(&png).unwrap(), vec![frames[0].clone()]);

        let mut animation = Vec::new();
        let mut assembler = JobAssembler::new(7, 5, 3, &mut animation).unwrap();
        for f in &frames {
            let png = assembler.add_frame(f).unwrap();
            assert_eq!(decode_png(&png).unwrap(), vec![f.clone()]);
        }
        let sheet = assembler.finish().unwrap();
        assert_eq!(decode_png(&animation).unwrap(), frames);
        let thumbs: Vec<Image> = frames.iter().map(thumbnail).collect();
        assert_eq!(decode_png(&sheet).unwrap(), vec![contact_sheet(&thumbs)]);
    }
}
