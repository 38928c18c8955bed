//! A newc cpio writer, enough for a root tree as a Linux initramfs: files,
//! directories, symlinks and device nodes, sorted, with mtime 0 (the same
//! tree gives the same bytes).

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One newc header: "070701" and thirteen 8-digit hex fields.
fn header(w: &mut impl Write, fields: [u64; 13]) -> std::io::Result<()> {
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())
}

/// Zero bytes that pad `n` to a multiple of four.
fn pad(w: &mut impl Write, n: usize) -> std::io::Result<()> {
    w.write_all(&[0u8; 3][..(4 - n % 4) % 4])
}

fn entry(
    w: &mut impl Write,
    ino: u64,
    name: &str,
    m: &std::fs::Metadata,
    data: &[u8],
) -> std::io::Result<()> {
    let rdev = m.rdev();
    let (maj, min) = (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    );
    // ino, mode, uid, gid, nlink, mtime (0: times do not matter in RAM),
    // filesize, dev major/minor, rdev major/minor, namesize, check.
    let fields = [
        ino,
        u64::from(m.mode()),
        u64::from(m.uid()),
        u64::from(m.gid()),
        1,
        0,
        data.len() as u64,
        0,
        0,
        maj,
        min,
        name.len() as u64 + 1,
        0,
    ];
    header(w, fields)?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + name.len() + 1)?;
    w.write_all(data)?;
    pad(w, data.len())
}

/// Writes every entry under `root` (relative names, sorted; `skip` says
/// which to leave out) and the trailer to `w`.
pub fn write_tree(w: &mut impl Write, root: &Path, skip: impl Fn(&str) -> bool) -> Result<()> {
    let mut ino = 0;
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            !skip(&rel.to_string_lossy())
        });
    // walkdir yields a directory before its contents, in name order per
    // directory; the kernel needs parents first, nothing more.
    for e in walk {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .to_string();
        let m = e
            .metadata()
            .with_context(|| format!("reading {}", p.display()))?;
        let data = if m.file_type().is_symlink() {
            std::fs::read_link(p)
                .with_context(|| format!("reading {}", p.display()))?
                .to_string_lossy()
                .as_bytes()
                .to_vec()
        } else if m.is_file() {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
        } else {
            Vec::new()
        };
        ino += 1;
        entry(w, ino, &rel, &m, &data).context("writing the cpio archive")?;
    }
    let trailer = "TRAILER!!!";
    header(
        w,
        [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, trailer.len() as u64 + 1, 0],
    )
    .and_then(|_| w.write_all(trailer.as_bytes()))
    .and_then(|_| w.write_all(&[0]))
    .and_then(|_| pad(w, 110 + trailer.len() + 1))
    .context("writing the cpio archive")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    /// (name, mode, data) of every entry, parsed back from newc bytes.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let at4 = |n: usize| n.div_ceil(4) * 4;
        loop {
            assert_eq!(&b[..6], b"070701");
            let f = |i: usize| {
                u64::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap() as usize
            };
            let (mode, size, namesize) = (f(1) as u32, f(6), f(11));
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(b[110 + namesize - 1], 0, "names end with NUL");
            let start = at4(110 + namesize);
            let data = b[start..start + size].to_vec();
            b = &b[at4(start + size)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn a_tree_round_trips_sorted_parents_first_with_links_and_modes() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/kpaas")).unwrap();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::write(r.join("boot/vmlinuz"), b"kernel").unwrap();
        std::fs::write(r.join("etc/kpaas/live"), b"live\n").unwrap();
        std::fs::write(r.join("etc/a"), b"12345").unwrap();
        std::os::unix::fs::symlink("/usr/bin", r.join("bin")).unwrap();
        let mut out = Vec::new();
        write_tree(&mut out, r, |rel| rel == "boot").unwrap();
        assert_eq!(out.len() % 4, 0);
        let got = parse(&out);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "etc", "etc/a", "etc/kpaas", "etc/kpaas/live"]
        );
        assert_eq!(got[0].1 & 0o170000, 0o120000, "a symlink");
        assert_eq!(got[0].2, b"/usr/bin");
        assert_eq!(got[1].1 & 0o170000, 0o040000, "a directory");
        assert_eq!(got[2].2, b"12345");
        assert_eq!(got[4].2, b"live\n");
        // The same tree, the same bytes.
        let mut again = Vec::new();
        write_tree(&mut again, r, |rel| rel == "boot").unwrap();
        assert_eq!(out, again);
    }
}
