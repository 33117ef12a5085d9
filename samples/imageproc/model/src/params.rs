//! The job parameters that shape the processing of each image.

use serde::{Deserialize, Serialize};

/// The widest output the sample produces, in pixels.
pub const MAX_WIDTH: u32 = 8192;
/// The largest input image accepted, in pixels (width × height).
pub const MAX_INPUT_PIXELS: u64 = 50_000_000;
/// The smallest and largest blur `sigma`.
pub const SIGMA_RANGE: (f64, f64) = (0.1, 50.0);

/// The operation applied to each image after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Nothing: the image is only resized and converted.
    None,
    /// Luma (Rec. 709 weights, integer arithmetic); alpha is kept.
    Grayscale,
    /// Separable gaussian blur of standard deviation `sigma` pixels.
    Blur,
    /// Sobel gradient magnitude of the luma, as a grayscale image.
    Edges,
}

/// The encoding of the output images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// PNG (keeps alpha).
    Png,
    /// Baseline JPEG at `quality` (drops alpha).
    Jpeg,
}

impl Format {
    /// The file extension of the format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpg",
        }
    }
}

/// How every image of a job is processed: the application's parameters
/// other than `per_task`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageParams {
    /// Output width in pixels; the height keeps the aspect ratio.
    pub width: u32,
    /// The operation applied after resizing.
    pub filter: Filter,
    /// Standard deviation of the blur, in output pixels (`filter = blur`).
    pub sigma: f64,
    /// The output encoding.
    pub format: Format,
    /// JPEG quality, 1 to 100 (`format = jpeg`).
    pub quality: u8,
}

impl Default for ImageParams {
    fn default() -> Self {
        Self {
            width: 256,
            filter: Filter::None,
            sigma: 2.0,
            format: Format::Png,
            quality: 85,
        }
    }
}

impl ImageParams {
    /// Checks the ranges the types do not express, with a message naming
    /// the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_WIDTH).contains(&self.width) {
            return Err(format!(
                "`width` is {}; it must be between 1 and {MAX_WIDTH}",
                self.width
            ));
        }
        let (lo, hi) = SIGMA_RANGE;
        if !(lo..=hi).contains(&self.sigma) {
            return Err(format!(
                "`sigma` is {}; it must be between {lo} and {hi}",
                self.sigma
            ));
        }
        if !(1..=100).contains(&self.quality) {
            return Err(format!(
                "`quality` is {}; it must be between 1 and 100",
                self.quality
            ));
        }
        Ok(())
    }
}

/// The name of the output of input `input`: the same path with its
/// extension replaced by the format's (`photos/a.jpeg` → `photos/a.png`).
pub fn output_name(input: &str, format: Format) -> String {
    let file_start = input.rfind('/').map_or(0, |i| i + 1);
    let stem_end = match input[file_start..].rfind('.') {
        Some(dot) if dot > 0 => file_start + dot,
        _ => input.len(),
    };
    format!("{}.{}", &input[..stem_end], format.extension())
}

/// The output names of `inputs` (in the same order), or an error naming
/// two inputs that would produce the same output.
pub fn output_names<S: AsRef<str>>(inputs: &[S], format: Format) -> Result<Vec<String>, String> {
    let names: Vec<String> = inputs
        .iter()
        .map(|i| output_name(i.as_ref(), format))
        .collect();
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    for pair in order.windows(2) {
        if names[pair[0]] == names[pair[1]] {
            return Err(format!(
                "inputs `{}` and `{}` would both be written as `{}`",
                inputs[pair[0]].as_ref(),
                inputs[pair[1]].as_ref(),
                names[pair[0]]
            ));
        }
    }
    Ok(names)
}

/// The preview (thumbnail) file name of output `output`, relative to
/// `previews/`: its stem with `.png`.
pub fn preview_name(output: &str) -> String {
    output_name(output, Format::Png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_replace_the_extension() {
        assert_eq!(output_name("a.jpeg", Format::Png), "a.png");
        assert_eq!(output_name("dir.x/b", Format::Jpeg), "dir.x/b.jpg");
        assert_eq!(output_name(".hidden", Format::Png), ".hidden.png");
        assert_eq!(output_name("p/q.r.PNG", Format::Jpeg), "p/q.r.jpg");
        assert_eq!(preview_name("x/y.jpg"), "x/y.png");
    }

    #[test]
    fn clashing_outputs_are_refused() {
        assert_eq!(
            output_names(&["b.png", "a.png"], Format::Jpeg).unwrap(),
            ["b.jpg", "a.jpg"]
        );
        let err = output_names(&["a.png", "c.png", "a.jpg"], Format::Png).unwrap_err();
        assert!(err.contains("`a.png` and `a.jpg`"), "{err}");
    }

    #[test]
    fn validation_names_the_parameter() {
        assert!(ImageParams::default().validate().is_ok());
        let p = ImageParams {
            width: 0,
            ..ImageParams::default()
        };
        assert!(p.validate().unwrap_err().contains("`width`"));
        let p = ImageParams {
            sigma: 0.0,
            ..ImageParams::default()
        };
        assert!(p.validate().unwrap_err().contains("`sigma`"));
        let p = ImageParams {
            quality: 0,
            ..ImageParams::default()
        };
        assert!(p.validate().unwrap_err().contains("`quality`"));
    }
}
