//! Declares a linear memory of 1 GiB from the start: the module asks for it
//! before any code runs. (Only for WebAssembly: host builds of the
//! workspace compile this crate too.)

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=--initial-memory=1073741824");
    }
}
