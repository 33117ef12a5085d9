//! The render sample end to end: frames rendered in tiles by the guests are
//! pixel-identical to a native render, whatever the tile size.

use serde_json::json;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, LogStream, OutputKind, TaskState};
use tessera_sample_render_model::{
    ANIMATION_FILE, CONTACT_SHEET_FILE, Image, RenderParams, TILE_FILE, TILE_PREVIEW_FILE,
    contact_sheet, decode_png, frame_file_name, render_frame, render_job, render_tile, thumbnail,
    tile_task_name,
};

use crate::harness::{TestService, assert_api_error, params};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_matches_a_native_render_whatever_the_tile_size() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("render").await;
    let base = RenderParams {
        frames: 5,
        width: 96,
        height: 64,
        tile_size: 4096,
        samples_per_pixel: 2,
        max_depth: 3,
    };
    // The native reference, on two threads, checked against single frames.
    let native = render_job(&base, 2);
    assert_eq!(native.len(), 5);
    assert_eq!(native[3], render_frame(&base, 3));
    let thumbs: Vec<Image> = native.iter().map(thumbnail).collect();
    let sheet = contact_sheet(&thumbs);

    // Whole frames (one tile each), then 40-pixel tiles (3×2 per frame,
    // with smaller tiles at the right and bottom edges).
    for (tile_size, tiles_per_frame) in [(4096u32, 1usize), (40, 6)] {
        let p = RenderParams { tile_size, ..base };
        assert_eq!(p.tiles().len(), tiles_per_frame);
        let tasks = p.frames as usize * tiles_per_frame;
        let job = svc
            .run(SubmitJob {
                app: "render".into(),
                parameters: params(serde_json::to_value(p).unwrap()),
                ..SubmitJob::default()
            })
            .await;
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        assert_eq!(job.progress.total, tasks as u64);
        assert_eq!(job.progress.succeeded, tasks as u64);
        assert!(job.merge);

        let outputs = svc.client.outputs(&job.id).await.unwrap();
        let mut job_outputs: Vec<&str> = outputs
            .iter()
            .filter(|o| o.task.is_none())
            .map(|o| o.path.as_str())
            .collect();
        job_outputs.sort_unstable();
        let mut expected: Vec<String> = (0..p.frames).map(frame_file_name).collect();
        expected.push(ANIMATION_FILE.into());
        expected.push(CONTACT_SHEET_FILE.into());
        expected.sort_unstable();
        assert_eq!(job_outputs, expected);
        let mut tile_outputs: Vec<_> = outputs
            .iter()
            .filter(|o| o.task.is_some())
            .map(|o| o.path.as_str())
            .collect();
        tile_outputs.sort_unstable();
        tile_outputs.dedup();
        assert_eq!(tile_outputs, [TILE_FILE, TILE_PREVIEW_FILE]);
        assert_eq!(
            outputs.iter().filter(|o| o.task.is_some()).count(),
            2 * tasks,
            "a tile and its preview per task"
        );

        let job_output = |path: &str| {
            outputs
                .iter()
                .find(|o| o.task.is_none() && o.path == path)
                .unwrap_or_else(|| panic!("no job output {path}"))
        };
        let download = |path: &str| {
            let output = job_output(path);
            let client = &svc.client;
            let id = job.id.clone();
            async move { client.output_bytes(&id, output).await.unwrap() }
        };

        // Every frame, pixel for pixel.
        for (f, reference) in native.iter().enumerate() {
            let png = download(&frame_file_name(f as u32)).await;
            let decoded = decode_png(&png).unwrap();
            assert_eq!(decoded.len(), 1);
            assert!(
                decoded[0] == *reference,
                "tile size {tile_size}: frame {f} differs from the native render in {} bytes",
                decoded[0]
                    .pixels
                    .iter()
                    .zip(&reference.pixels)
                    .filter(|(a, b)| a != b)
                    .count()
            );
        }
        // The animation has every frame, in order.
        let animation = decode_png(&download(ANIMATION_FILE).await).unwrap();
        assert_eq!(animation.len(), p.frames as usize);
        assert!(animation == native, "animation frames differ");
        // The contact sheet is a preview of the native frames.
        let contact = job_output(CONTACT_SHEET_FILE);
        assert!(contact.path.starts_with("previews/"));
        assert_eq!(contact.kind, OutputKind::Preview);
        assert_eq!(job_output(ANIMATION_FILE).kind, OutputKind::Output);
        let previews = svc
            .client
            .outputs_of_kind(&job.id, OutputKind::Preview)
            .await
            .unwrap();
        // The job's one preview is the contact sheet; each task's is the
        // thumbnail of its tile, as rendered natively.
        let job_previews: Vec<_> = previews.iter().filter(|o| o.task.is_none()).collect();
        assert_eq!(job_previews, [contact]);
        assert_eq!(previews.len(), tasks + 1);
        for (t, rect) in p.tiles().into_iter().enumerate().take(3) {
            let task = tile_task_name(1, t);
            let preview = previews
                .iter()
                .find(|o| o.task.as_deref() == Some(task.as_str()))
                .unwrap_or_else(|| panic!("no preview of {task}"));
            assert_eq!(preview.path, TILE_PREVIEW_FILE);
            let tile = Image {
                width: rect.w,
                height: rect.h,
                pixels: render_tile(&p, 1, rect),
            };
            let png = svc.client.output_bytes(&job.id, preview).await.unwrap();
            assert!(
                decode_png(&png).unwrap() == [thumbnail(&tile)],
                "preview of {task}"
            );
        }
        let decoded = decode_png(&download(CONTACT_SHEET_FILE).await).unwrap();
        assert!(decoded == [sheet.clone()], "contact sheet differs");

        let page = svc.client.tasks(&job.id, None, None, None).await.unwrap();
        assert_eq!(page.tasks.len(), tasks + 2, "split, tiles, merge");
        assert!(page.tasks.iter().all(|t| t.state == TaskState::Succeeded));
        let merge_log = svc
            .client
            .log(&job.id, "_merge", LogStream::Stderr, None)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&merge_log).contains(&format!("from {tasks} tiles")),
            "merge stderr: {}",
            String::from_utf8_lossy(&merge_log)
        );
    }

    // Out of a declared range: refused at submit.
    assert_api_error(
        svc.client
            .submit(&SubmitJob {
                app: "render".into(),
                parameters: params(json!({"samples_per_pixel": 0})),
                ..SubmitJob::default()
            })
            .await,
        400,
        "invalid_parameter",
        "parameter `samples_per_pixel` must be at least 1, got 0",
    );
    // Every parameter in range, but too many tiles: the splitter refuses.
    let job = svc
        .run(SubmitJob {
            app: "render".into(),
            parameters: params(json!({
                "frames": 100, "width": 1024, "height": 1024, "tile_size": 16
            })),
            max_task_retries: Some(0),
            ..SubmitJob::default()
        })
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let failure = job.failure.unwrap();
    assert!(
        failure
            .message
            .contains("409600 tasks; at most 10000 are allowed"),
        "{failure:?}"
    );
    svc.stop().await;
}
