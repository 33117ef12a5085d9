use crate::{Error, Job, Task, TaskResult};

/// A task processor: runs one task, and merges a job's task outputs.
///
/// Implement it on a unit struct and export it with [`export_processor!`](crate::export_processor).
pub trait Processor {
    /// Runs one task. Whatever is in `/output` when it returns `Ok` is the
    /// task's output; an `Err` fails the attempt with its message.
    fn process(task: Task) -> Result<(), Error>;

    /// Runs once per job after every task succeeded, when the splitter asked
    /// for a merge; reads each task's outputs (see
    /// [`TaskResult::output_path`]) and writes the job's outputs to `/output`.
    ///
    /// The default does nothing.
    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let _ = (job, tasks);
        Ok(())
    }
}

/// Exports a [`Processor`] as the component's `process` and `merge`
/// functions. Call it once, at the root of a `cdylib` crate.
///
/// ```no_run
/// use tessera_processor_sdk::{Error, Processor, Task, export_processor};
///
/// struct Nothing;
///
/// impl Processor for Nothing {
///     fn process(_task: Task) -> Result<(), Error> {
///         Ok(())
///     }
/// }
///
/// export_processor!(Nothing);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_processor {
    ($processor:ty) => {
        const _: () = {
            struct __TesseraProcessor;

            impl $crate::__bindings::Guest for __TesseraProcessor {
                fn process(
                    task: $crate::__bindings::Task,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__bindings::process::<$processor>(task)
                }

                fn merge(
                    job: $crate::__bindings::Job,
                    tasks: ::std::vec::Vec<$crate::__bindings::TaskResult>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__bindings::merge::<$processor>(job, tasks)
                }
            }

            $crate::__bindings::__export_processor_world!(
                __TesseraProcessor with_types_in $crate::__bindings
            );
        };
    };
}
