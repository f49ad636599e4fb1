//! The raw disk baseline: sequential direct-I/O write and read bandwidth of
//! the disk under a directory, measured the way the disk does best, so that
//! broker throughput can be quoted as a fraction of the physical limit.
//!
//! The write phase keeps [`IN_FLIGHT`] aligned [`BLOCK_BYTES`] writes in
//! flight through glommio's io_uring (each of [`IN_FLIGHT`] tasks writes
//! every `IN_FLIGHT`-th block, so the file fills front to back) and ends
//! with one `fdatasync`, which is inside the timed span. The read phase reads
//! the file back the same way. The scratch file is removed afterwards, also
//! when a phase fails.
//!
//! glommio decides once per thread and device whether reads may use its
//! polled (IOPOLL) ring by reading the first block of the first direct-I/O
//! file opened there; on an empty file that probe wrongly succeeds and later
//! reads fail with EOPNOTSUPP on devices without poll queues (virtio disks).
//! So the scratch file is created with a real, synced block before glommio
//! opens it, and the measurement runs on its own fresh executor thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use glommio::io::OpenOptions;

/// Bytes of each write and read: large enough that per-request costs vanish.
pub const BLOCK_BYTES: usize = 1 << 20;
/// Requests kept in flight at once.
pub const IN_FLIGHT: usize = 8;
/// Bytes of the block written before glommio's device probe.
const PROBE_BYTES: usize = 4096;
const _: () = assert!(BLOCK_BYTES % PROBE_BYTES == 0);

/// What the baseline measured. MB is 10^6 bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskBaseline {
    pub dir: String,
    pub bytes: u64,
    pub block_bytes: u64,
    pub in_flight: usize,
    pub write_mb_per_s: f64,
    pub read_mb_per_s: f64,
}

/// Removes the scratch file however the measurement ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "removing the baseline scratch file");
            }
        }
    }
}

/// Writes then reads `bytes` (rounded up to whole blocks) in `dir`.
pub fn measure(dir: &Path, bytes: u64) -> anyhow::Result<DiskBaseline> {
    let blocks = bytes.div_ceil(BLOCK_BYTES as u64).max(1);
    let path = dir.join(format!(".sluice-disk-baseline-{}", std::process::id()));
    let scratch = Scratch(path.clone());
    {
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.write_all(&[0x5a; PROBE_BYTES])
            .with_context(|| format!("writing {}", path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    let run_path = path.clone();
    let (write_s, read_s) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("disk-baseline")
        .spawn(move || async move { phases(&run_path, blocks).await })
        .map_err(|e| anyhow::anyhow!("starting the disk baseline executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("disk baseline executor: {e}"))??;
    drop(scratch);
    let total = blocks * BLOCK_BYTES as u64;
    Ok(DiskBaseline {
        dir: dir.display().to_string(),
        bytes: total,
        block_bytes: BLOCK_BYTES as u64,
        in_flight: IN_FLIGHT,
        write_mb_per_s: total as f64 / 1e6 / write_s.max(1e-9),
        read_mb_per_s: total as f64 / 1e6 / read_s.max(1e-9),
    })
}

/// Both timed phases; returns their seconds.
async fn phases(path: &Path, blocks: u64) -> anyhow::Result<(f64, f64)> {
    // glommio's errors are not `Sync`; anyhow keeps their text.
    let io = |op: &'static str| {
        move |e: glommio::GlommioError<()>| anyhow::anyhow!("{op} {}: {e}", path.display())
    };
    let file = Rc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(io("opening"))?,
    );
    let started = Instant::now();
    let writers: Vec<_> = (0..IN_FLIGHT as u64)
        .map(|lane| {
            let file = file.clone();
            glommio::spawn_local(async move {
                let mut block = lane;
                while block < blocks {
                    let mut buf = file.alloc_dma_buffer(BLOCK_BYTES);
                    buf.as_bytes_mut().fill((block as u8) | 1);
                    let written = file.write_at(buf, block * BLOCK_BYTES as u64).await?;
                    if written != BLOCK_BYTES {
                        return Err(glommio::GlommioError::IoError(std::io::Error::other(
                            format!("short write of {written} bytes"),
                        )));
                    }
                    block += IN_FLIGHT as u64;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await.map_err(io("writing"))?;
    }
    file.fdatasync().await.map_err(io("syncing"))?;
    let write_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let readers: Vec<_> = (0..IN_FLIGHT as u64)
        .map(|lane| {
            let file = file.clone();
            glommio::spawn_local(async move {
                let mut block = lane;
                while block < blocks {
                    let read = file
                        .read_at_aligned(block * BLOCK_BYTES as u64, BLOCK_BYTES)
                        .await?;
                    if read.len() != BLOCK_BYTES || read[0] != (block as u8) | 1 {
                        return Err(glommio::GlommioError::IoError(std::io::Error::other(
                            format!("block {block} read back wrong"),
                        )));
                    }
                    block += IN_FLIGHT as u64;
                }
                Ok(())
            })
        })
        .collect();
    for r in readers {
        r.await.map_err(io("reading"))?;
    }
    let read_s = started.elapsed().as_secs_f64();
    match Rc::try_unwrap(file) {
        Ok(f) => f.close().await.map_err(io("closing"))?,
        Err(_) => anyhow::bail!("baseline file still shared"),
    }
    Ok((write_s, read_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_cleans_up() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let b = measure(dir.path(), 64 << 20).unwrap();
        eprintln!("disk baseline: {b:?}");
        assert_eq!(b.bytes, 64 << 20);
        assert!(b.write_mb_per_s.is_finite() && b.write_mb_per_s > 0.0);
        assert!(b.read_mb_per_s.is_finite() && b.read_mb_per_s > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
