//! Bodies for tests of decoding: a decompression bomb made cheaply, and the
//! process's peak memory to show it was stopped.

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;

/// `decoded_mib` MiB of zeros in one gzip member of about a thousandth of
/// that, made by repeating the deflate blocks of one MiB of zeros (after a
/// sync flush each ends on a byte, and decodes the same wherever it stands
/// after a MiB of zeros): compressing 10 GiB would take minutes. The last
/// block and the trailer are left out; a reader stops long before them.
pub fn gzip_bomb(decoded_mib: usize) -> Vec<u8> {
    let mib = vec![0u8; 1024 * 1024];
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(&mib);
    let _ = encoder.flush();
    let primed = encoder.get_ref().len();
    let _ = encoder.write_all(&mib);
    let _ = encoder.flush();
    let segment = encoder.get_ref()[primed..].to_vec();
    let mut bomb = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    bomb.extend_from_slice(&encoder.get_ref()[..primed]);
    for _ in 1..decoded_mib {
        bomb.extend_from_slice(&segment);
    }
    bomb.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    bomb
}

/// The process's peak resident memory so far, in KiB (Linux only).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
