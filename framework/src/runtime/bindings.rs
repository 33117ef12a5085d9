//! Host bindings for the `tessera:app` worlds (`framework/wit/tessera.wit`).

/// The splitter world; its `types` and `host` interfaces are shared with the
/// processor world.
pub(super) mod splitter_world {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "splitter",
    });
}

/// The processor world.
pub(super) mod processor_world {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "processor",
        with: {
            "tessera:app/types": super::splitter_world::tessera::app::types,
            "tessera:app/host": super::splitter_world::tessera::app::host,
        },
    });
}

pub(super) use splitter_world::tessera::app::host;
pub(super) use splitter_world::tessera::app::types;
