//! The imageproc sample end to end: every output byte-identical to the
//! model's native computation, whatever the number of images per task.

use std::io::{Cursor, Read};

use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{FailureKind, JobState, OutputKind};
use tessera_sample_imageproc_model::{
    Filter, Format, ImageParams, generate_images, preview_name, process_job,
};

use crate::harness::{TestService, output, params};

/// Uploads `images` and returns them as job inputs.
async fn upload(svc: &TestService, images: &[(String, Vec<u8>)]) -> Vec<InputRef> {
    let mut inputs = Vec::new();
    for (name, bytes) in images {
        let file = svc.client.upload_bytes(bytes.clone().into()).await.unwrap();
        inputs.push(InputRef {
            name: name.clone(),
            sha256: file.sha256,
        });
    }
    inputs
}

fn submit(image: &ImageParams, per_task: u32, inputs: Vec<InputRef>) -> SubmitJob {
    let mut parameters = match serde_json::to_value(image).unwrap() {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    parameters.insert("per_task".into(), per_task.into());
    SubmitJob {
        app: "imageproc".into(),
        parameters,
        inputs,
        max_task_retries: Some(0),
        ..SubmitJob::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imageproc_matches_the_native_pipeline_whatever_the_batching() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("imageproc").await;
    let images = generate_images(11, 7);
    let inputs = upload(&svc, &images).await;

    let cases = [
        (
            ImageParams {
                width: 120,
                filter: Filter::Edges,
                format: Format::Png,
                ..ImageParams::default()
            },
            1u32,
        ),
        (
            ImageParams {
                width: 90,
                filter: Filter::Blur,
                sigma: 1.7,
                format: Format::Jpeg,
                quality: 80,
            },
            3,
        ),
        (
            ImageParams {
                width: 200,
                filter: Filter::Grayscale,
                format: Format::Jpeg,
                ..ImageParams::default()
            },
            7,
        ),
        (
            ImageParams {
                width: 64,
                filter: Filter::None,
                format: Format::Png,
                ..ImageParams::default()
            },
            4,
        ),
    ];
    for (image_params, per_task) in cases {
        let native = process_job(&images, &image_params, 2).unwrap();
        let job = svc
            .run(submit(&image_params, per_task, inputs.clone()))
            .await;
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        let tasks = images.len().div_ceil(per_task as usize) as u64;
        assert_eq!(job.progress.total, tasks);
        assert_eq!(job.progress.succeeded, tasks);

        // The merged outputs are byte-identical to the native ones.
        let zip = output(&svc.client, &job.id, None, "results.zip").await;
        assert_eq!(zip, native.results_zip, "{image_params:?}");
        let csv = output(&svc.client, &job.id, None, "summary.csv").await;
        assert_eq!(String::from_utf8(csv).unwrap(), native.summary_csv);

        // So is every task's image and preview, each entry of the zip.
        let outputs = svc.client.outputs(&job.id).await.unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(&zip)).unwrap();
        assert_eq!(archive.len(), images.len());
        for (name, out, processed) in &native.images {
            let task_image = outputs
                .iter()
                .find(|o| o.task.is_some() && o.path == format!("images/{out}"))
                .unwrap_or_else(|| panic!("no task output images/{out}"));
            assert_eq!(task_image.kind, OutputKind::Output);
            let bytes = svc.client.output_bytes(&job.id, task_image).await.unwrap();
            assert_eq!(&bytes[..], &processed.bytes[..], "{name}");

            let preview_path = format!("previews/{}", preview_name(out));
            let preview = outputs
                .iter()
                .find(|o| o.task.is_some() && o.path == preview_path)
                .unwrap_or_else(|| panic!("no task output {preview_path}"));
            assert_eq!(preview.kind, OutputKind::Preview);
            let bytes = svc.client.output_bytes(&job.id, preview).await.unwrap();
            assert_eq!(&bytes[..], &processed.preview[..], "{name} preview");

            let mut stored = Vec::new();
            archive
                .by_name(out)
                .unwrap()
                .read_to_end(&mut stored)
                .unwrap();
            assert_eq!(stored, processed.bytes, "{name} in results.zip");
        }
        let extension = image_params.format.extension();
        assert!(native.images.iter().all(|(_, o, _)| o.ends_with(extension)));
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imageproc_names_a_corrupt_image_and_refuses_bad_parameters() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("imageproc").await;
    let mut images = generate_images(3, 2);
    let mut corrupt = images[0].1.clone();
    corrupt.truncate(corrupt.len() / 3);
    images.push(("broken.png".to_string(), corrupt));
    let inputs = upload(&svc, &images).await;

    let job = svc
        .run(submit(&ImageParams::default(), 1, inputs.clone()))
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let failure = job.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError, "{failure:?}");
    assert!(
        failure
            .message
            .contains("broken.png: cannot decode the PNG image"),
        "{failure:?}"
    );
    assert_eq!(job.progress.failed, 1);

    // A sigma out of the declared range is refused at submission.
    let mut request = submit(&ImageParams::default(), 1, inputs);
    request
        .parameters
        .extend(params(serde_json::json!({"sigma": 0.0})));
    let err = svc.client.submit(&request).await.unwrap_err();
    assert!(err.to_string().contains("sigma"), "{err}");
    svc.stop().await;
}
