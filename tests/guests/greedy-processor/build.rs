//! Declares a linear memory of 1 GiB from the start: the module asks for it
//! before any code runs.

fn main() {
    println!("cargo:rustc-link-arg=--initial-memory=1073741824");
}
