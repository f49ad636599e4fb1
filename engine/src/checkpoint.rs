//! Small state files written atomically and durably.
//!
//! A file is written to `<name>.tmp`, synced, renamed over `<name>`, and the
//! directory is synced, so after a crash it is either the old or the new
//! version. Framed files (the clean-shutdown marker, the log start offset,
//! the cleaner's position) also carry a magic number, a version, their length
//! and a CRC32C of the payload, so a damaged one reads as absent rather than
//! as a wrong value.
//!
//! Paths are checked for existence with a blocking `stat`: these files are
//! read at startup and written on roll, clean shutdown, retention and
//! compaction, never per produce or fetch.

use std::path::Path;

use glommio::io::{BufferedFile, Directory};

use crate::error::{Error, Result};

const MAGIC: [u8; 4] = *b"SLCK";
const VERSION: u8 = 1;
/// Magic, version, payload length.
const FRAME_HEADER_BYTES: usize = 4 + 1 + 4;
const CRC_BYTES: usize = 4;
/// No state file comes near this; a larger one is damage.
const FRAMED_PAYLOAD_BYTES_MAX: usize = 1 << 16;

/// The whole contents of `path`, or `None` if it does not exist.
pub(crate) async fn read_raw(path: &Path) -> Result<Option<Vec<u8>>> {
    if !path.exists() {
        return Ok(None);
    }
    let file = BufferedFile::open(path)
        .await
        .map_err(|e| Error::glommio("open state file", path, e))?;
    let size = file
        .file_size()
        .await
        .map_err(|e| Error::glommio("stat state file", path, e))?;
    let bytes = file
        .read_at(0, size as usize)
        .await
        .map_err(|e| Error::glommio("read state file", path, e))?;
    let out = bytes.to_vec();
    file.close()
        .await
        .map_err(|e| Error::glommio("close state file", path, e))?;
    if out.len() as u64 != size {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Replaces `path` with `bytes`, durably except for the directory entry,
/// which [`sync_dir`] makes durable.
pub(crate) async fn write_raw(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let file = BufferedFile::create(&tmp)
        .await
        .map_err(|e| Error::glommio("create state file", &tmp, e))?;
    let len = bytes.len();
    if len > 0 {
        let written = file
            .write_at(bytes, 0)
            .await
            .map_err(|e| Error::glommio("write state file", &tmp, e))?;
        if written != len {
            return Err(Error::io(
                "write state file",
                &tmp,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("{written} of {len} bytes"),
                ),
            ));
        }
    }
    file.fdatasync()
        .await
        .map_err(|e| Error::glommio("sync state file", &tmp, e))?;
    file.close()
        .await
        .map_err(|e| Error::glommio("close state file", &tmp, e))?;
    glommio::io::rename(&tmp, path)
        .await
        .map_err(|e| Error::glommio("rename state file", path, e))
}

pub(crate) async fn remove_if_present(path: &Path) -> Result<()> {
    if path.exists() {
        glommio::io::remove(path)
            .await
            .map_err(|e| Error::glommio("remove file", path, e))?;
    }
    Ok(())
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let d = Directory::open(dir)
        .await
        .map_err(|e| Error::glommio("open directory", dir, e))?;
    d.sync()
        .await
        .map_err(|e| Error::glommio("sync directory", dir, e))?;
    d.close()
        .await
        .map_err(|e| Error::glommio("close directory", dir, e))
}

/// Writes a framed state file (see the module docs).
pub(crate) async fn write_framed(path: &Path, payload: &[u8]) -> Result<()> {
    assert!(
        payload.len() <= FRAMED_PAYLOAD_BYTES_MAX,
        "state files are small"
    );
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len() + CRC_BYTES);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    write_raw(path, out).await
}

/// Reads a framed state file; `None` if absent or damaged.
pub(crate) async fn read_framed(path: &Path) -> Result<Option<Vec<u8>>> {
    Ok(read_raw(path).await?.and_then(|bytes| unframe(&bytes)))
}

fn unframe(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < FRAME_HEADER_BYTES + CRC_BYTES || bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    let len = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
    if len > FRAMED_PAYLOAD_BYTES_MAX || bytes.len() != FRAME_HEADER_BYTES + len + CRC_BYTES {
        return None;
    }
    let payload = &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    let crc = u32::from_be_bytes(
        bytes[FRAME_HEADER_BYTES + len..]
            .try_into()
            .expect("4 bytes"),
    );
    (crc32c::crc32c(payload) == crc).then(|| payload.to_vec())
}

/// Reads big-endian i64 fields from a payload.
pub(crate) fn i64s<const N: usize>(payload: &[u8]) -> Option<[i64; N]> {
    if payload.len() != N * 8 {
        return None;
    }
    let mut out = [0i64; N];
    for (i, chunk) in payload.chunks_exact(8).enumerate() {
        out[i] = i64::from_be_bytes(chunk.try_into().expect("8 bytes"));
    }
    Some(out)
}

pub(crate) fn encode_i64s(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reject_damage() {
        let mut framed = Vec::new();
        framed.extend_from_slice(&MAGIC);
        framed.push(VERSION);
        framed.extend_from_slice(&8u32.to_be_bytes());
        framed.extend_from_slice(&encode_i64s(&[42]));
        framed.extend_from_slice(&crc32c::crc32c(&encode_i64s(&[42])).to_be_bytes());
        assert_eq!(unframe(&framed).and_then(|p| i64s::<1>(&p)), Some([42]));
        for i in 0..framed.len() {
            let mut bad = framed.clone();
            bad[i] ^= 0x10;
            assert_eq!(unframe(&bad), None, "flip at byte {i}");
        }
        assert_eq!(unframe(&framed[..framed.len() - 1]), None);
    }
}
