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
//! [`measure_synced`] is the reference for appends that wait for an
//! `fdatasync`: the same writes into a fresh file, each followed by an
//! `fdatasync` before its task goes on, so that every 1 MiB is durable
//! before its writer sends the next.
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

/// Runs `run` on a fresh executor thread with the path of a new scratch
/// file in `dir`, created with a synced first block and removed afterwards.
fn on_scratch_file<T: Send + 'static, F>(
    dir: &Path,
    run: impl FnOnce(PathBuf) -> F + Send + 'static,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>> + 'static,
{
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
    let out = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("disk-baseline")
        .spawn(move || run(path))
        .map_err(|e| anyhow::anyhow!("starting the disk baseline executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("disk baseline executor: {e}"))?;
    drop(scratch);
    out
}

/// Writes then reads `bytes` (rounded up to whole blocks) in `dir`.
pub fn measure(dir: &Path, bytes: u64) -> anyhow::Result<DiskBaseline> {
    let blocks = bytes.div_ceil(BLOCK_BYTES as u64).max(1);
    let (write_s, read_s) =
        on_scratch_file(dir, move |path| async move { phases(&path, blocks).await })?;
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

/// Write bandwidth, in MB/s (10^6 bytes), of `bytes` (rounded up to whole
/// blocks) written in `dir` with an `fdatasync` after every block: the
/// durable-append reference.
pub fn measure_synced(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    let blocks = bytes.div_ceil(BLOCK_BYTES as u64).max(1);
    let write_s = on_scratch_file(dir, move |path| async move {
        let file = open(&path).await?;
        let started = Instant::now();
        write_blocks(&file, &path, blocks, true).await?;
        let write_s = started.elapsed().as_secs_f64();
        close(file, &path).await?;
        Ok(write_s)
    })?;
    Ok((blocks * BLOCK_BYTES as u64) as f64 / 1e6 / write_s.max(1e-9))
}

/// glommio's errors are not `Sync`; anyhow keeps their text.
fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl Fn(glommio::GlommioError<()>) -> anyhow::Error + 'a {
    move |e| anyhow::anyhow!("{op} {}: {e}", path.display())
}

async fn open(path: &Path) -> anyhow::Result<Rc<glommio::io::DmaFile>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(io_error("opening", path))?;
    Ok(Rc::new(file))
}

async fn close(file: Rc<glommio::io::DmaFile>, path: &Path) -> anyhow::Result<()> {
    match Rc::try_unwrap(file) {
        Ok(f) => f.close().await.map_err(io_error("closing", path)),
        Err(_) => anyhow::bail!("baseline file still shared"),
    }
}

/// Writes `blocks` blocks front to back from [`IN_FLIGHT`] tasks, each
/// syncing after every write of its own if `sync_each`, and then syncs.
async fn write_blocks(
    file: &Rc<glommio::io::DmaFile>,
    path: &Path,
    blocks: u64,
    sync_each: bool,
) -> anyhow::Result<()> {
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
                    if sync_each {
                        file.fdatasync().await?;
                    }
                    block += IN_FLIGHT as u64;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await.map_err(io_error("writing", path))?;
    }
    file.fdatasync().await.map_err(io_error("syncing", path))
}

/// Both timed phases; returns their seconds.
async fn phases(path: &Path, blocks: u64) -> anyhow::Result<(f64, f64)> {
    let io = |op: &'static str| io_error(op, path);
    let file = open(path).await?;
    let started = Instant::now();
    write_blocks(&file, path, blocks, false).await?;
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
    close(file, path).await?;
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
        let synced = measure_synced(dir.path(), 16 << 20).unwrap();
        assert!(synced.is_finite() && synced > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
