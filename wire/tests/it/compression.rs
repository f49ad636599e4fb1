//! `compress` and `decompress` for every codec: round trips, the output
//! bound, and hostile input.

use sluice_wire::batch::Compression;
use sluice_wire::compression::{compress, decompress};

use crate::{seed, Rng, ALL_CODECS};

const MIB: usize = 1 << 20;

/// Inputs from empty to 1 MiB, compressible and not.
fn inputs(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>)> {
    let random = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
    let text: Vec<u8> = b"key=user-42 value={\"clicks\": 17} "
        .iter()
        .copied()
        .cycle()
        .take(100_000)
        .collect();
    // Runs of random length over a small alphabet: compressible, but with no
    // period a codec could lean on.
    let mut runs = Vec::with_capacity(MIB);
    while runs.len() < MIB {
        let b = b'a' + rng.below(8) as u8;
        let n = 1 + rng.below(40) as usize;
        runs.extend(std::iter::repeat_n(b, n.min(MIB - runs.len())));
    }
    vec![
        ("empty", Vec::new()),
        ("one byte", vec![7]),
        ("short text", b"hello, compressed world".to_vec()),
        ("100 KB text", text),
        ("1 MiB zeros", vec![0; MIB]),
        ("1 MiB runs", runs),
        ("1 MiB random", random(rng, MIB)),
    ]
}

/// Checks that `input` survives `codec` and that one byte less of room is
/// refused.
fn check_round_trip(codec: Compression, name: &str, input: &[u8]) {
    let data = compress(codec, input);
    let back =
        decompress(codec, &data, input.len()).unwrap_or_else(|e| panic!("{codec:?} {name}: {e}"));
    assert!(back == input, "{codec:?} {name}: round trip differs");
    if let Some(short) = input.len().checked_sub(1) {
        assert!(
            decompress(codec, &data, short).is_err(),
            "{codec:?} {name}: output past bytes_max was accepted"
        );
    }
    assert_eq!(
        decompress(codec, &data, usize::MAX).unwrap().len(),
        input.len(),
        "{codec:?} {name}: no bound"
    );
}

#[test]
fn every_codec_round_trips_and_bounds_output() {
    let mut rng = Rng::new(seed());
    for (name, input) in inputs(&mut rng) {
        for codec in ALL_CODECS {
            check_round_trip(codec, name, &input);
        }
    }
}

#[test]
fn compression_shrinks_compressible_input() {
    let input = vec![b'x'; MIB];
    for codec in ALL_CODECS {
        let data = compress(codec, &input);
        if codec == Compression::None {
            assert_eq!(data, input);
        } else {
            assert!(data.len() < MIB / 20, "{codec:?}: {} bytes", data.len());
        }
    }
}

/// A small stream that inflates to 64 MiB is refused at a 1 MiB bound
/// without the 64 MiB being produced: the output is cut at the bound.
#[test]
fn a_decompression_bomb_is_refused() {
    let input = vec![0u8; 64 * MIB];
    for codec in ALL_CODECS {
        if codec == Compression::None {
            continue;
        }
        let bomb = compress(codec, &input);
        assert!(bomb.len() < 4 * MIB, "{codec:?}: {} bytes", bomb.len());
        assert!(decompress(codec, &bomb, MIB).is_err(), "{codec:?}");
    }
    assert!(decompress(Compression::None, &[0; 10], 9).is_err());
}

#[test]
fn garbage_is_an_error_for_every_codec() {
    let garbage: [&[u8]; 5] = [
        b"this is not compressed data at all, just text",
        &[0xff; 64],
        &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        // Each codec's magic followed by nothing useful.
        b"\x1f\x8b\x08\x00\x00\x00",
        b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01\0\0\x10\0\xff\xff",
    ];
    for codec in ALL_CODECS {
        if codec == Compression::None {
            continue;
        }
        for (i, g) in garbage.iter().enumerate() {
            assert!(decompress(codec, g, MIB).is_err(), "{codec:?} garbage {i}");
        }
    }
    for (codec, magic) in [
        (Compression::Lz4, &b"\x04\x22\x4d\x18\x64\x40\xa7"[..]),
        (Compression::Zstd, &b"\x28\xb5\x2f\xfd\x00\x58"[..]),
    ] {
        assert!(
            decompress(codec, magic, MIB).is_err(),
            "{codec:?} bare magic"
        );
    }
}

/// Every truncation of a stream is an error, except where the format itself
/// cannot tell: a xerial snappy stream cut between blocks is a shorter valid
/// stream (only the batch's record count catches that).
#[test]
fn truncated_streams_are_errors() {
    // Past one 64 KiB LZ4 block and two 32 KiB xerial blocks, yet small once
    // compressed, so that trying every cut stays quick.
    let input: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i / 50 % 26) as u8).collect();
    for codec in ALL_CODECS {
        if codec == Compression::None {
            continue;
        }
        let data = compress(codec, &input);
        let mut prefixes = 0;
        for cut in 0..data.len() {
            match decompress(codec, &data[..cut], input.len()) {
                Err(_) => {}
                Ok(out) => {
                    assert_eq!(codec, Compression::Snappy, "{codec:?} cut at {cut}");
                    assert!(out.len() < input.len(), "snappy cut at {cut}");
                    assert_eq!(out.len() % (32 * 1024), 0, "snappy cut at {cut}");
                    assert!(input.starts_with(&out), "snappy cut at {cut}");
                    prefixes += 1;
                }
            }
        }
        if codec == Compression::Snappy {
            // After the header, after the first block and after the second.
            assert_eq!(prefixes, 3);
        }
    }
}

/// Truncations and random byte changes of valid streams never panic; what
/// they decode to stays within the bound.
#[test]
fn damaged_streams_never_panic() {
    let mut rng = Rng::new(seed());
    let input: Vec<u8> = (0..20_000u32).map(|i| (i / 7 % 251) as u8).collect();
    for codec in ALL_CODECS {
        let data = compress(codec, &input);
        for cut in 0..data.len().min(300) {
            let bounded = decompress(codec, &data[..cut], input.len());
            assert!(bounded.map_or(true, |out| out.len() <= input.len()));
        }
        for _ in 0..300 {
            let mut bad = data.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] = rng.next() as u8;
            }
            let bytes_max = rng.below(2 * input.len() as u64) as usize;
            if let Ok(out) = decompress(codec, &bad, bytes_max) {
                assert!(out.len() <= bytes_max, "{codec:?}");
            }
        }
    }
}
