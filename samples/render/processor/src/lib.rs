//! The processor of the `render` sample.
//!
//! `process` ray traces one tile of one frame and writes its raw RGB8 rows
//! to `intermediate/tile.rgb` and its thumbnail to `previews/tile.png`. `merge` stitches every frame's tiles and
//! writes `frames/frame-NNNN.png`, the animated PNG `animation.png` and the
//! contact sheet `previews/contact-sheet.png`.

use std::fs::{self, File};
use std::io::BufWriter;

use tessera_processor_sdk::{
    Error, Job, Level, Params, Processor, Task, TaskResult, export_processor, input_path, log,
    output_path, progress,
};
use tessera_sample_render_model::{
    ANIMATION_FILE, CONTACT_SHEET_FILE, Image, JobAssembler, Rect, RenderParams, Scene, TILE_FILE,
    TILE_PREVIEW_FILE, encode_png, frame_file_name, thumbnail, tile_task_name,
};

struct Renderer;

impl Processor for Renderer {
    fn process(task: Task) -> Result<(), Error> {
        let params = render_parameters(task.job_parameters())?;
        let p = task.parameters();
        let frame: u32 = p.get("frame")?;
        let tile: usize = p.get("tile")?;
        let rect = Rect {
            x: p.get("x")?,
            y: p.get("y")?,
            w: p.get("w")?,
            h: p.get("h")?,
        };
        if frame >= params.frames || params.tiles().get(tile) != Some(&rect) {
            return Err(Error::new(format!(
                "frame {frame}, tile {tile} {rect:?} is not part of the job's {} frames of {}x{} in tiles of {}",
                params.frames, params.width, params.height, params.tile_size
            )));
        }

        fs::create_dir_all(output_path("previews"))?;
        fs::create_dir_all(output_path("intermediate"))?;
        let scene = Scene::new(&params, frame);
        let row_len = rect.w as usize * 3;
        let mut pixels = vec![0; rect.area() * 3];
        for (dy, row) in pixels.chunks_exact_mut(row_len).enumerate() {
            scene.render_row(rect.x, rect.y + dy as u32, row);
            if dy % 16 == 15 {
                progress((dy + 1) as f32 / rect.h as f32);
            }
        }
        let tile = Image {
            width: rect.w,
            height: rect.h,
            pixels,
        };
        let preview = encode_png(&thumbnail(&tile)).map_err(encoding)?;
        fs::write(output_path(TILE_PREVIEW_FILE), preview)?;
        fs::write(output_path(TILE_FILE), tile.pixels)?;
        Ok(())
    }

    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let params = render_parameters(job.parameters())?;
        let tiles = params.tiles();
        let expected = params.frames as usize * tiles.len();
        if tasks.len() != expected {
            return Err(Error::new(format!(
                "the job has {} tile tasks, {expected} were expected",
                tasks.len()
            )));
        }
        fs::create_dir_all(output_path("frames"))?;
        fs::create_dir_all(output_path("previews"))?;
        let animation = BufWriter::new(File::create(output_path(ANIMATION_FILE))?);
        let mut assembler =
            JobAssembler::new(params.width, params.height, params.frames, animation)
                .map_err(encoding)?;
        let mut image = Image::new(params.width, params.height);
        for frame in 0..params.frames {
            for (i, &rect) in tiles.iter().enumerate() {
                let name = tile_task_name(frame, i);
                let path = input_path(&format!("{name}/{TILE_FILE}"));
                let tile =
                    fs::read(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
                if tile.len() != rect.area() * 3 {
                    return Err(Error::new(format!(
                        "{} holds {} bytes; a {}x{} RGB8 tile has {}",
                        path.display(),
                        tile.len(),
                        rect.w,
                        rect.h,
                        rect.area() * 3
                    )));
                }
                image.blit(rect, &tile);
            }
            let png = assembler.add_frame(&image).map_err(encoding)?;
            fs::write(output_path(&frame_file_name(frame)), png)?;
            progress((frame + 1) as f32 / params.frames as f32);
        }
        let sheet = assembler.finish().map_err(encoding)?;
        fs::write(output_path(CONTACT_SHEET_FILE), sheet)?;
        log(
            Level::Info,
            &format!(
                "assembled {} frames of {}x{} from {} tiles",
                params.frames,
                params.width,
                params.height,
                tasks.len()
            ),
        );
        Ok(())
    }
}

export_processor!(Renderer);

fn render_parameters(params: &Params) -> Result<RenderParams, Error> {
    let params: RenderParams = params.deserialize()?;
    params.validate().map_err(|e| Error::new(e.to_string()))?;
    Ok(params)
}

fn encoding(e: impl std::fmt::Display) -> Error {
    Error::new(format!("encoding PNG: {e}"))
}
