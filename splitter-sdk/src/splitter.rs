use crate::{Error, Job, SplitPlan};

/// A job splitter: turns a job into tasks.
///
/// Implement it on a unit struct and export it with [`export_splitter!`](crate::export_splitter).
pub trait Splitter {
    /// Splits the job into tasks. An `Err` fails the job's split with its
    /// message.
    fn split(job: Job) -> Result<SplitPlan, Error>;
}

/// Exports a [`Splitter`] as the component's `split` function. Call it once,
/// at the root of a `cdylib` crate.
///
/// ```no_run
/// use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter};
///
/// struct One;
///
/// impl Splitter for One {
///     fn split(_job: Job) -> Result<SplitPlan, Error> {
///         Ok(SplitPlan::new().task(TaskSpec::new("only")))
///     }
/// }
///
/// export_splitter!(One);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_splitter {
    ($splitter:ty) => {
        const _: () = {
            struct __TesseraSplitter;

            impl $crate::__bindings::Guest for __TesseraSplitter {
                fn split(
                    job: $crate::__bindings::Job,
                ) -> ::core::result::Result<$crate::__bindings::SplitPlan, ::std::string::String>
                {
                    $crate::__bindings::split::<$splitter>(job)
                }
            }

            $crate::__bindings::__export_splitter_world!(
                __TesseraSplitter with_types_in $crate::__bindings
            );
        };
    };
}
