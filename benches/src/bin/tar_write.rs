//! Times one level of upstream Freezer's `tar` engine written by freezer-core
//! (`freezer_core::upstream::tar::write::write_level`), to compare with upstream's agent.
//!
//! ```text
//! cargo run --release -p freezer-benches --bin tar_write -- SRC [gzip|bzip2|xz|zstd] [LEVEL] [OUT]
//! ```
//!
//! OUT defaults to /dev/null. Prints the seconds, the sizes and the throughput.

use std::io::BufWriter;
use std::time::Instant;

use freezer_core::upstream::tar::write::{Compression, TarWriteOptions, write_level};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(src) = args.first() else {
        eprintln!("usage: tar_write SRC [gzip|bzip2|xz|zstd] [LEVEL] [OUT]");
        std::process::exit(2);
    };
    let compression = Compression::parse(args.get(1).map_or("gzip", String::as_str))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
    let level = args
        .get(2)
        .map(|l| l.parse::<u32>().expect("LEVEL is a number"));
    let out = args.get(3).map_or("/dev/null", String::as_str);
    let opts = TarWriteOptions {
        compression,
        compression_level: level,
        ..Default::default()
    };
    let file = std::fs::File::create(out).expect("OUT can be created");
    let t = Instant::now();
    let r = write_level(std::path::Path::new(src), None, &opts, BufWriter::new(file))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let s = t.elapsed().as_secs_f64();
    println!(
        "{} level {}: {:.2} s, archive {} B, written {} B ({:.1}%), {:.0} MiB/s, {} files, {} warnings",
        compression.as_str(),
        level.unwrap_or(compression.default_level()),
        s,
        r.archive_bytes,
        r.written_bytes,
        100.0 * r.written_bytes as f64 / r.archive_bytes.max(1) as f64,
        r.archive_bytes as f64 / s / 1048576.0,
        r.files,
        r.warning_count
    );
}
