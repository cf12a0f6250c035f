//! Embeds the Lua edition (`lua/rmq.lua`, beside this crate) when it is there. Without it the
//! crate still builds, and the client reads the library at run time from `RMQ_LUA`.
use std::path::Path;

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lua/rmq.lua");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=build.rs");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("rmq.lua");
    let code = std::fs::read_to_string(&src).unwrap_or_default();
    std::fs::write(out, code).unwrap();
}
