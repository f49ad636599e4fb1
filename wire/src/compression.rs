//! Record-section compression codecs, as Kafka frames them.
//!
//! LZ4 is the LZ4 frame format (independent 64 KiB blocks, no content
//! checksum), which Kafka since 0.10 and librdkafka write and read.

use std::io::{Read, Write};

use crate::error::DecodeError;

/// Compresses a batch's record section into an LZ4 frame.
pub fn lz4_compress(body: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(body.len() / 2 + 64));
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish()
        .expect("finishing an LZ4 frame into a Vec cannot fail")
}

/// Decompresses an LZ4 frame, refusing output beyond `bytes_max`.
pub fn lz4_decompress(frame: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut dec = lz4_flex::frame::FrameDecoder::new(frame).take(bytes_max as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| DecodeError::malformed("lz4 frame", e))?;
    if out.len() > bytes_max {
        return Err(DecodeError::malformed(
            "lz4 frame",
            format!("decompresses past {bytes_max} bytes"),
        ));
    }
    Ok(out)
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
}
