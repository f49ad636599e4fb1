//! Making glommio's per-device I/O choices on real data.
//!
//! glommio decides, once per thread and block device, whether reads may go to
//! its polled (IOPOLL) ring, by reading the first block of the first direct-I/O
//! file it opens there. When that file is empty the kernel answers the read
//! without reaching the device, the probe "succeeds", and on devices without
//! poll queues (virtio disks, for one) every later read then fails with
//! EOPNOTSUPP. [`prime_direct_io`] opens a file holding a real block first, so
//! the probe sees the device's true answer. Call it on every executor thread
//! before opening any log.

use std::io::Write;
use std::path::Path;

use glommio::io::DmaFile;

use crate::error::{Error, Result};

const PROBE_BYTES: usize = 4096;

/// Primes the current thread's device probe for `dir`'s device, then checks
/// that a direct-I/O read works there. Blocks the reactor briefly: startup only.
pub async fn prime_direct_io(dir: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    let path = dir.join(name);
    {
        let mut file =
            std::fs::File::create(&path).map_err(|e| Error::io("create probe", &path, e))?;
        file.write_all(&[0xa5; PROBE_BYTES])
            .map_err(|e| Error::io("write probe", &path, e))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync probe", &path, e))?;
    }
    let file = DmaFile::open(&path)
        .await
        .map_err(|e| Error::glommio("open probe", &path, e))?;
    let read = file
        .read_at(0, PROBE_BYTES)
        .await
        .map_err(|e| Error::glommio("read probe", &path, e))?;
    if read.len() != PROBE_BYTES || read.iter().any(|&b| b != 0xa5) {
        return Err(Error::CorruptBatch(
            "direct-I/O probe read back wrong bytes",
        ));
    }
    file.close()
        .await
        .map_err(|e| Error::glommio("close probe", &path, e))?;
    std::fs::remove_file(&path).map_err(|e| Error::io("remove probe", &path, e))?;
    Ok(())
}
