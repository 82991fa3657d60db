//! Generates the Rust code of Flagstaff's `.proto` files into `OUT_DIR`, with the protoc that
//! the `protoc-bin-vendored` crate ships, so a build needs no protoc installed. Also writes
//! `OUT_DIR/flagstaff.v1.bin`, the encoded `FileDescriptorSet` of the same files, which the
//! crate exposes as `FILE_DESCRIPTOR_SET` for gRPC server reflection.

use std::io;

/// The include root: `.proto` files are named relative to it, e.g. `flagstaff/v1/model.proto`.
const INCLUDE: &str = ".";

/// The `.proto` files of package `flagstaff.v1`. They generate into two Rust files, both
/// named `flagstaff.v1.rs`: the messages and a client module per service (`admin_client`,
/// `sync_client`) in `OUT_DIR`, and a server module per service (`admin_server`,
/// `sync_server`) in `OUT_DIR/servers`.
const PROTOS: &[&str] = &[
    "flagstaff/v1/model.proto",
    "flagstaff/v1/sync.proto",
    "flagstaff/v1/admin.proto",
];

fn main() -> io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    // prost-build runs the protoc named by PROTOC. A build script is a process of its own, so
    // setting its environment affects nothing else.
    std::env::set_var("PROTOC", protoc);

    // Rerun only when a .proto file or this script changes. (prost-build's own rerun lines
    // would name the include root, the whole crate, so that any edit reran protoc.)
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=flagstaff");

    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
        io::Error::other("OUT_DIR is not set: run this build script through cargo")
    })?);
    // The messages and the clients.
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .build_server(false)
        // Small starting buffers: see src/codec.rs (`Codec` is the clients' `SmallCodec`).
        .codec_path("crate::codec::Codec")
        .file_descriptor_set_path(out_dir.join("flagstaff.v1.bin"))
        .compile_protos(PROTOS, &[INCLUDE])?;

    // The servers, into a directory of their own, over the messages above; except that the
    // Watch stream's server sends `WatchMessage`s, which go on the wire as `WatchResponse`s
    // but may be encoded once and shared by every stream (see src/watch/message.rs).
    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .build_client(false)
        .out_dir(servers)
        // Requests that do not decode are INVALID_ARGUMENT; each has a size limit.
        .codec_path("crate::codec::ServerCodec")
        .extern_path(".flagstaff.v1", "crate::generated")
        .extern_path(".flagstaff.v1.WatchResponse", "crate::watch::WatchMessage")
        .compile_protos(PROTOS, &[INCLUDE])
}
