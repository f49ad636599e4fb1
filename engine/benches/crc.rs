//! Checking the CRC32C of a group of batches, as `Log::append` does: one
//! batch at a time through the `crc32c` crate against `crc32c_each`, which
//! runs three batches side by side. Prints one line per batch size with the
//! GB/s of each and their ratio.
//! Run with `cargo bench -p sluice-engine --bench crc`.

use std::hint::black_box;
use std::time::Instant;

/// Bytes checked per shape and repetition: a 1 MiB append group.
const GROUP_BYTES: usize = 1 << 20;
const REPEATS: usize = 2000;

/// GB/s (10^9 bytes) of `f` over `bytes` per call, best of 5 runs.
fn gb_per_s(bytes: usize, mut f: impl FnMut() -> u32) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut acc = 0u32;
        for _ in 0..REPEATS {
            acc ^= f();
        }
        black_box(acc);
        best = best.min(started.elapsed().as_secs_f64());
    }
    (bytes * REPEATS) as f64 / 1e9 / best
}

fn main() {
    for batch_bytes in [200usize, 1021, 4096, 16_333, 131_072] {
        let count = (GROUP_BYTES / batch_bytes).max(1);
        let batches: Vec<Vec<u8>> = (0..count)
            .map(|i| (0..batch_bytes).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let parts: Vec<&[u8]> = batches.iter().map(|b| &b[..]).collect();
        let bytes = count * batch_bytes;
        let one_by_one = gb_per_s(bytes, || {
            parts
                .iter()
                .fold(0, |acc, p| acc ^ crc32c::crc32c(black_box(p)))
        });
        let each = gb_per_s(bytes, || {
            sluice_engine::crc32c_each(black_box(&parts))
                .into_iter()
                .fold(0, |acc, c| acc ^ c)
        });
        println!(
            "batches of {batch_bytes:>6} B: crc32c one by one {one_by_one:6.2} GB/s, crc32c_each {each:6.2} GB/s, ratio {:.2}x",
            each / one_by_one
        );
    }
}
