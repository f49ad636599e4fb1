//! Record-section compression codecs, as Kafka frames them.
//!
//! [`compress`] and [`decompress`] cover every codec a v2 batch can name:
//!
//! * gzip: one or more gzip members (RFC 1952), as Java's `GZIPOutputStream`
//!   and librdkafka write them.
//! * snappy: Kafka's Java client writes the framing of xerial's snappy-java
//!   `SnappyOutputStream`: the 8-byte magic `\x82SNAPPY\0`, a big-endian i32
//!   version and an i32 oldest compatible version (both 1), then blocks of at
//!   most 32 KiB of input, each a big-endian i32 length followed by that many
//!   bytes of raw snappy. librdkafka writes a single raw snappy block with no
//!   framing at all, and both clients read either, telling them apart by the
//!   magic. We read both the same way and write the xerial framing, which
//!   every client reads.
//! * LZ4: the LZ4 frame format (independent 64 KiB blocks, no content
//!   checksum), which Kafka since 0.10 and librdkafka write and read.
//! * zstd: one or more zstd frames.
//!
//! Invariants: decompression never panics on input, and never produces or
//! allocates for more than `bytes_max` bytes of output; input that would
//! decompress to more is an error, not a truncated result.

use std::io::{Read, Write};

use crate::batch::Compression;
use crate::error::DecodeError;

/// The magic that opens a snappy-java (xerial) stream.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
/// Magic, then the version and the oldest compatible version.
const XERIAL_HEADER_BYTES: usize = 16;
/// The version we write; snappy-java has only ever written 1.
const XERIAL_VERSION: i32 = 1;
/// Input bytes per xerial block, as snappy-java's default block size (which
/// Kafka's Java producer keeps), so each block decompresses to at most this.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
const _: () = assert!(XERIAL_HEADER_BYTES == XERIAL_MAGIC.len() + 4 + 4);

/// The zstd compression level we write: zstd's own default, which is also
/// Kafka's and librdkafka's.
const ZSTD_LEVEL: i32 = 3;
/// The largest zstd window we accept: 2^27 bytes, zstd's default limit and
/// the window of level 22, the highest level Kafka lets a producer choose.
///
/// The window is not capped by `bytes_max` because a producer that streams
/// without announcing the content size (the Java client) declares the full
/// window of its level however small the batch. A hostile frame can thus make
/// the decoder reserve 128 MiB of address space; it touches only the pages it
/// writes, and output is cut at `bytes_max`, so resident memory stays bounded
/// by that. Rejected alternative: a window cap derived from `bytes_max`, which
/// refuses valid batches from producers at zstd levels 20 to 22.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Compresses a batch's record section with `codec`, framed as Kafka reads it.
pub fn compress(codec: Compression, body: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => body.to_vec(),
        Compression::Gzip => gzip_compress(body),
        Compression::Snappy => snappy_compress(body),
        Compression::Lz4 => lz4_compress(body),
        Compression::Zstd => zstd_compress(body),
    }
}

/// Decompresses a record section compressed with `codec`, refusing output
/// beyond `bytes_max` bytes.
///
/// Empty `data` is an error for every codec but none: each compressor writes
/// at least a header, even for empty input, and a decoder would otherwise
/// read nothing as zero frames.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    bytes_max: usize,
) -> Result<Vec<u8>, DecodeError> {
    if data.is_empty() && codec != Compression::None {
        return Err(DecodeError::malformed(
            "record section",
            format!("empty {codec:?} stream"),
        ));
    }
    match codec {
        Compression::None => {
            if data.len() > bytes_max {
                return Err(too_large("record section", bytes_max));
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(
            "gzip data",
            flate2::bufread::MultiGzDecoder::new(data),
            bytes_max,
        ),
        Compression::Snappy => snappy_decompress(data, bytes_max),
        Compression::Lz4 => lz4_decompress(data, bytes_max),
        Compression::Zstd => zstd_decompress(data, bytes_max),
    }
}

/// Compresses a batch's record section into an LZ4 frame.
pub fn lz4_compress(body: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(body.len() / 2 + 64));
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish()
        .expect("finishing an LZ4 frame into a Vec cannot fail")
}

/// Decompresses one or more LZ4 frames, refusing output beyond `bytes_max`.
pub fn lz4_decompress(frame: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecodeError> {
    // lz4_flex's decoder takes the end of input at a block boundary as the
    // end of the frame, so a truncated frame would decode to a prefix. The
    // frame structure is checked first, so a frame without its end mark is
    // refused. TODO(wire): drop the check if lz4_flex learns to refuse
    // truncated frames itself.
    lz4_frames_complete(frame)?;
    read_bounded(
        "lz4 frame",
        lz4_flex::frame::FrameDecoder::new(frame),
        bytes_max,
    )
}

/// Checks that `data` is a run of complete LZ4 frames (or skippable frames),
/// each ending with its end mark, without decompressing anything. Checksums
/// and block contents are left to the decoder.
fn lz4_frames_complete(data: &[u8]) -> Result<(), DecodeError> {
    const FRAME_MAGIC: u32 = 0x184D_2204;
    const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
    const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
    const FLG_VERSION_MASK: u8 = 0xC0;
    const FLG_VERSION_1: u8 = 0x40;
    const FLG_BLOCK_CHECKSUM: u8 = 0x10;
    const FLG_CONTENT_SIZE: u8 = 0x08;
    const FLG_CONTENT_CHECKSUM: u8 = 0x04;
    const FLG_DICT_ID: u8 = 0x01;
    const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

    fn truncated() -> DecodeError {
        DecodeError::malformed("lz4 frame", "truncated")
    }
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = rest.split_at_checked(n).ok_or_else(truncated)?;
        *rest = tail;
        Ok(head)
    }
    fn take_u32(rest: &mut &[u8]) -> Result<u32, DecodeError> {
        let b = take(rest, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    let mut rest = data;
    while !rest.is_empty() {
        let magic = take_u32(&mut rest)?;
        if magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC {
            let len = take_u32(&mut rest)?;
            take(&mut rest, len as usize)?;
            continue;
        }
        if magic != FRAME_MAGIC {
            return Err(DecodeError::malformed(
                "lz4 frame",
                format!("magic {magic:#010x}"),
            ));
        }
        let flg = take(&mut rest, 2)?[0];
        if flg & FLG_VERSION_MASK != FLG_VERSION_1 {
            return Err(DecodeError::malformed(
                "lz4 frame",
                format!("flags {flg:#04x}"),
            ));
        }
        let optional = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 }
            + if flg & FLG_DICT_ID != 0 { 4 } else { 0 };
        take(&mut rest, optional + 1)?; // and the header checksum
        let block_checksum = if flg & FLG_BLOCK_CHECKSUM != 0 { 4 } else { 0 };
        loop {
            let size = take_u32(&mut rest)?;
            if size == 0 {
                break; // the end mark
            }
            let len = (size & !BLOCK_UNCOMPRESSED) as usize;
            take(&mut rest, len)?;
            take(&mut rest, block_checksum)?;
        }
        if flg & FLG_CONTENT_CHECKSUM != 0 {
            take(&mut rest, 4)?;
        }
    }
    Ok(())
}

fn gzip_compress(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish()
        .expect("finishing a gzip member into a Vec cannot fail")
}

fn zstd_compress(body: &[u8]) -> Vec<u8> {
    // The one-shot API records the content size in the frame header, so a
    // reader sizes its window to the batch rather than to the level.
    zstd::bulk::compress(body, ZSTD_LEVEL)
        .expect("zstd compression into memory at a valid level cannot fail")
}

fn zstd_decompress(data: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(data)
        .map_err(|e| DecodeError::malformed("zstd frame", e))?;
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| DecodeError::malformed("zstd frame", e))?;
    read_bounded("zstd frame", dec, bytes_max)
}

fn snappy_compress(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + body.len() / 2 + 64);
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    let mut enc = snap::raw::Encoder::new();
    // An empty body still gets one (empty) block: librdkafka takes a stream
    // of no more than a header and one length for raw snappy.
    let empty = body.is_empty().then_some(body);
    for block in body.chunks(XERIAL_BLOCK_BYTES).chain(empty) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
        let n = enc
            .compress(block, &mut out[at + 4..])
            .expect("a 32 KiB block into a buffer of its worst case cannot fail");
        out.truncate(at + 4 + n);
        let n = i32::try_from(n).expect("a compressed 32 KiB block fits an i32");
        out[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }
    out
}

fn snappy_decompress(data: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut dec = snap::raw::Decoder::new();
    if !data.starts_with(XERIAL_MAGIC) {
        snappy_block(&mut dec, data, &mut out, bytes_max)?;
        return Ok(out);
    }
    let mut rest = data;
    // snappy-java reads a stream that is several streams concatenated, header
    // and all, so a header may follow any block. A block length never looks
    // like the magic: its first byte would make it negative.
    while !rest.is_empty() {
        if rest.starts_with(XERIAL_MAGIC) {
            if rest.len() < XERIAL_HEADER_BYTES {
                return Err(DecodeError::malformed(
                    "snappy data",
                    "truncated xerial header",
                ));
            }
            rest = &rest[XERIAL_HEADER_BYTES..];
            continue;
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(DecodeError::malformed(
                "snappy data",
                "truncated xerial block length",
            ));
        };
        let len = i32::from_be_bytes(*len);
        let block = usize::try_from(len)
            .ok()
            .and_then(|len| tail.get(..len))
            .ok_or_else(|| {
                DecodeError::malformed(
                    "snappy data",
                    format!("xerial block of {len} bytes with {} bytes left", tail.len()),
                )
            })?;
        snappy_block(&mut dec, block, &mut out, bytes_max)?;
        rest = &tail[block.len()..];
    }
    Ok(out)
}

/// Appends the decompressed raw snappy `block` to `out`, after checking its
/// announced length against what is left of `bytes_max`.
fn snappy_block(
    dec: &mut snap::raw::Decoder,
    block: &[u8],
    out: &mut Vec<u8>,
    bytes_max: usize,
) -> Result<(), DecodeError> {
    let len =
        snap::raw::decompress_len(block).map_err(|e| DecodeError::malformed("snappy data", e))?;
    if len > bytes_max - out.len() {
        return Err(too_large("snappy data", bytes_max));
    }
    let at = out.len();
    out.resize(at + len, 0);
    let n = dec
        .decompress(block, &mut out[at..])
        .map_err(|e| DecodeError::malformed("snappy data", e))?;
    if n != len {
        return Err(DecodeError::malformed(
            "snappy data",
            format!("block announces {len} bytes and holds {n}"),
        ));
    }
    Ok(())
}

/// Reads `reader` to its end, failing once it yields more than `bytes_max`.
fn read_bounded(
    what: &'static str,
    reader: impl Read,
    bytes_max: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let limit = u64::try_from(bytes_max)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::malformed(what, e))?;
    if out.len() > bytes_max {
        return Err(too_large(what, bytes_max));
    }
    Ok(out)
}

fn too_large(what: &'static str, bytes_max: usize) -> DecodeError {
    DecodeError::malformed(what, format!("decompresses past {bytes_max} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_round_trips_and_bounds_output() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let frame = lz4_compress(&body);
        assert!(frame.len() < body.len() / 10);
        assert_eq!(lz4_decompress(&frame, body.len()).unwrap(), body);
        assert!(lz4_decompress(&frame, body.len() - 1).is_err());
        assert!(lz4_decompress(&frame[..frame.len() / 2], body.len()).is_err());
    }

    /// The xerial layout, field by field, for a body of two blocks.
    #[test]
    fn snappy_writes_xerial_framing() {
        let body = vec![b'a'; XERIAL_BLOCK_BYTES + 10];
        let data = snappy_compress(&body);
        assert_eq!(&data[..8], b"\x82SNAPPY\0");
        assert_eq!(data[8..12], 1i32.to_be_bytes()); // version
        assert_eq!(data[12..16], 1i32.to_be_bytes()); // oldest compatible version
        let first = i32::from_be_bytes(data[16..20].try_into().unwrap()) as usize;
        let block = &data[20..20 + first];
        assert_eq!(
            snap::raw::decompress_len(block).unwrap(),
            XERIAL_BLOCK_BYTES
        );
        let second_at = 20 + first;
        let second =
            i32::from_be_bytes(data[second_at..second_at + 4].try_into().unwrap()) as usize;
        assert_eq!(second_at + 4 + second, data.len());
        assert_eq!(
            snap::raw::decompress_len(&data[second_at + 4..]).unwrap(),
            10
        );
        assert_eq!(snappy_decompress(&data, body.len()).unwrap(), body);
    }

    /// What librdkafka writes: one raw snappy block, no framing.
    #[test]
    fn snappy_reads_raw_blocks() {
        let body = b"raw snappy as librdkafka writes it".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&body).unwrap();
        assert_eq!(snappy_decompress(&raw, body.len()).unwrap(), body);
        assert!(snappy_decompress(&raw, body.len() - 1).is_err());
    }

    /// Two xerial streams back to back read as their concatenation, as
    /// snappy-java reads them.
    #[test]
    fn snappy_reads_concatenated_xerial_streams() {
        let mut data = snappy_compress(b"first ");
        data.extend_from_slice(&snappy_compress(b"second"));
        assert_eq!(snappy_decompress(&data, 12).unwrap(), b"first second");
        assert!(snappy_decompress(&data, 11).is_err());
    }

    #[test]
    fn snappy_refuses_bad_xerial_blocks() {
        let mut data = snappy_compress(b"abc");
        data.push(0);
        assert!(
            snappy_decompress(&data, 100).is_err(),
            "truncated block length"
        );
        let mut data = XERIAL_MAGIC.to_vec();
        data.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        data.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(
            snappy_decompress(&data, 100).is_err(),
            "negative block length"
        );
        let mut data = XERIAL_MAGIC.to_vec();
        data.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        data.extend_from_slice(&100i32.to_be_bytes());
        data.extend_from_slice(&[0; 10]);
        assert!(snappy_decompress(&data, 100).is_err(), "block past the end");
        assert!(
            snappy_decompress(&XERIAL_MAGIC[..], 100).is_err(),
            "truncated header"
        );
    }
}
