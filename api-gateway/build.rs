//! Builds the web app (`web/`) into the gateway: each asset gets a name
//! with a hash of its content (so it can be cached for a year and a new
//! build is never served stale) and a gzipped copy made once here, not per
//! request; `index.html` gets the hashed names. `src/web.rs` includes the
//! table written here.

use std::{
    env, fs,
    io::Write as _,
    path::{Path, PathBuf},
};

/// The assets under `web/` besides `index.html`, and their content types.
const ASSETS: [(&str, &str); 3] = [
    ("app.js", "text/javascript; charset=utf-8"),
    ("app.css", "text/css; charset=utf-8"),
    ("icon.svg", "image/svg+xml"),
];

fn main() {
    let web = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("web");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    println!("cargo::rerun-if-changed=web");

    let mut index = read(&web.join("index.html"));
    let mut table = String::from("[\n");
    for (name, content_type) in ASSETS {
        let source = web.join(name);
        let body =
            fs::read(&source).unwrap_or_else(|err| panic!("reading {}: {err}", source.display()));
        let (stem, extension) = name.rsplit_once('.').expect("assets have an extension");
        let path = format!("/assets/{stem}.{:016x}.{extension}", fnv1a(&body));
        let gzipped = out.join(format!("{name}.gz"));
        fs::write(&gzipped, gzip(&body)).expect("writing to OUT_DIR");
        let placeholder = format!("{{{{{name}}}}}");
        assert!(
            index.contains(&placeholder),
            "index.html does not link {name}"
        );
        index = index.replace(&placeholder, &path);
        table.push_str(&format!(
            "    Asset {{ path: {path:?}, content_type: {content_type:?}, body: include_bytes!({source:?}), gzipped: include_bytes!({gzipped:?}) }},\n",
        ));
    }
    table.push(']');
    fs::write(out.join("index.html"), index).expect("writing to OUT_DIR");
    fs::write(out.join("assets.rs"), table).expect("writing to OUT_DIR");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// 64-bit FNV-1a: enough to tell two builds of an asset apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}
