//! The guest's root file system: an initramfs, a cpio archive in the
//! "newc" format the kernel unpacks into its rootfs before it starts
//! `/init`. Written with the `cpio` crate (it writes device nodes, which
//! `/dev/console` must be, without needing root to `mknod` them first).
//!
//! Layout: `/init` -> `bin/svm`, the servers in `/bin`, the plan in
//! `/etc/svm/guest.plan`, mount points, `/dev/console` (char 5:1: without it
//! the kernel starts init with no stdin/stdout/stderr), and a scenario
//! directory under `/scenarios` when one is given.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What a scenario directory copied in may hold (it comes from the user).
pub const MAX_TREE_FILES: usize = 10_000;
pub const MAX_TREE_BYTES: u64 = 64 << 20;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir,
    /// A file copied from the host.
    HostFile(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the root, no leading `/` (the kernel's cpio convention).
    pub path: String,
    pub perm: u32,
    pub content: Content,
}

#[derive(Debug, Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
}

impl Initramfs {
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.push(path, 0o755, Content::Dir)
    }

    pub fn host_file(&mut self, path: &str, perm: u32, from: &Path) -> &mut Self {
        self.push(path, perm, Content::HostFile(from.to_path_buf()))
    }

    pub fn bytes(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.push(path, perm, Content::Bytes(data.to_vec()))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.push(path, 0o777, Content::Symlink(target.into()))
    }

    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.push(path, perm, Content::CharDevice { major, minor })
    }

    fn push(&mut self, path: &str, perm: u32, content: Content) -> &mut Self {
        self.entries.push(Entry {
            path: path.trim_start_matches('/').to_owned(),
            perm,
            content,
        });
        self
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Adds a host directory tree under `at`: directories and regular files
    /// only (a symlink is refused: it could reach outside the tree), within
    /// [`MAX_TREE_FILES`] and [`MAX_TREE_BYTES`].
    pub fn tree(&mut self, at: &str, from: &Path) -> Result<&mut Self, TreeError> {
        let mut budget = (MAX_TREE_FILES, MAX_TREE_BYTES);
        self.dir(at);
        self.tree_inner(at, from, &mut budget)?;
        Ok(self)
    }

    fn tree_inner(
        &mut self,
        at: &str,
        from: &Path,
        budget: &mut (usize, u64),
    ) -> Result<(), TreeError> {
        let mut names: Vec<_> = std::fs::read_dir(from)
            .map_err(|e| TreeError::Io(from.to_path_buf(), e.kind()))?
            .collect::<Result<_, _>>()
            .map_err(|e| TreeError::Io(from.to_path_buf(), e.kind()))?;
        // Sorted, so the same tree makes the same archive.
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let path = e.path();
            let name = e.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| TreeError::BadName(path.clone()))?;
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|err| TreeError::Io(path.clone(), err.kind()))?;
            budget.0 = budget.0.checked_sub(1).ok_or(TreeError::TooMany)?;
            let inside = format!("{at}/{name}");
            if meta.is_dir() {
                self.dir(&inside);
                self.tree_inner(&inside, &path, budget)?;
            } else if meta.is_file() {
                budget.1 = budget.1.checked_sub(meta.len()).ok_or(TreeError::TooBig)?;
                self.host_file(&inside, 0o644, &path);
            } else {
                return Err(TreeError::NotPlain(path));
            }
        }
        Ok(())
    }

    /// Writes the archive (entries in the order given, then the trailer).
    pub fn write_to(&self, out: &Path) -> io::Result<u64> {
        let file = io::BufWriter::new(File::create(out)?);
        let mut counted = CountingWriter {
            inner: file,
            bytes: 0,
        };
        for (i, e) in self.entries.iter().enumerate() {
            // Inode numbers only need to differ (hard links share one).
            let ino = u32::try_from(i + 1).map_err(|_| too_big("entries"))?;
            write_entry(&mut counted, e, ino)?;
        }
        let mut counted = cpio::newc::trailer(counted)?;
        counted.flush()?;
        Ok(counted.bytes)
    }
}

fn write_entry<W: Write>(w: &mut W, e: &Entry, ino: u32) -> io::Result<()> {
    let builder = cpio::newc::Builder::new(&e.path)
        .ino(ino)
        .uid(0)
        .gid(0)
        .mtime(0);
    match &e.content {
        Content::Dir => {
            let b = builder.mode(S_IFDIR | e.perm).nlink(2);
            b.write(w, 0).finish()?;
        }
        Content::HostFile(from) => {
            let src = File::open(from)?;
            let size = u32::try_from(src.metadata()?.len()).map_err(|_| too_big("a file"))?;
            let mut writer = builder.mode(S_IFREG | e.perm).nlink(1).write(w, size);
            // The header promised `size` bytes: a file that shrank meanwhile
            // must fail here, not leave a short entry.
            let copied = io::copy(&mut src.take(u64::from(size)), &mut writer)?;
            if copied != u64::from(size) {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while packed", from.display()),
                ));
            }
            writer.finish()?;
        }
        Content::Bytes(data) => write_data(w, builder.mode(S_IFREG | e.perm), data)?,
        Content::Symlink(target) => {
            write_data(w, builder.mode(S_IFLNK | e.perm), target.as_bytes())?
        }
        Content::CharDevice { major, minor } => {
            let b = builder
                .mode(S_IFCHR | e.perm)
                .nlink(1)
                .rdev_major(*major)
                .rdev_minor(*minor);
            b.write(w, 0).finish()?;
        }
    }
    Ok(())
}

fn write_data<W: Write>(w: &mut W, b: cpio::newc::Builder, data: &[u8]) -> io::Result<()> {
    let size = u32::try_from(data.len()).map_err(|_| too_big("an entry"))?;
    let mut writer = b.nlink(1).write(w, size);
    writer.write_all(data)?;
    writer.finish()?;
    Ok(())
}

fn too_big(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} too big for cpio newc"),
    )
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a directory tree was not copied into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    Io(PathBuf, io::ErrorKind),
    /// A name that is not UTF-8.
    BadName(PathBuf),
    /// A symlink, socket, device or pipe.
    NotPlain(PathBuf),
    TooMany,
    TooBig,
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(p, k) => write!(f, "{}: {k}", p.display()),
            Self::BadName(p) => write!(f, "{}: not a UTF-8 name", p.display()),
            Self::NotPlain(p) => write!(f, "{}: neither a file nor a directory", p.display()),
            Self::TooMany => write!(f, "more than {MAX_TREE_FILES} entries"),
            Self::TooBig => write!(f, "more than {} MiB", MAX_TREE_BYTES >> 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("svm-initramfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// (name, mode, rdev major, rdev minor, data) of every entry, read back.
    fn read_back(archive: &Path) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut f = File::open(archive).unwrap();
        let mut out = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(f).unwrap();
            if r.entry().is_trailer() {
                return out;
            }
            let e = r.entry();
            let head = (
                e.name().to_owned(),
                e.mode(),
                e.rdev_major(),
                e.rdev_minor(),
            );
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            out.push((head.0, head.1, head.2, head.3, data));
            f = r.finish().unwrap();
        }
    }

    #[test]
    fn the_kernel_sees_what_was_packed() {
        let d = scratch("pack");
        let host = d.join("payload");
        // Odd sizes exercise the 4-byte padding after names and data.
        let payload: Vec<u8> = (0..4099u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&host, &payload).unwrap();
        let mut fs = Initramfs::default();
        fs.dir("/bin")
            .host_file("/bin/svm", 0o755, &host)
            .symlink("/init", "bin/svm")
            .dir("/dev")
            .char_device("/dev/console", 0o600, 5, 1)
            .bytes("/etc/x", 0o644, b"abc");
        let archive = d.join("initramfs.cpio");
        let size = fs.write_to(&archive).unwrap();
        assert_eq!(size, std::fs::metadata(&archive).unwrap().len());
        assert_eq!(size % 4, 0);
        let got = read_back(&archive);
        let names: Vec<_> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/svm", "init", "dev", "dev/console", "etc/x"]
        );
        assert_eq!(got[0].1, S_IFDIR | 0o755);
        assert_eq!((got[1].1, &got[1].4), (S_IFREG | 0o755, &payload));
        assert_eq!(
            (got[2].1, got[2].4.as_slice()),
            (S_IFLNK | 0o777, &b"bin/svm"[..])
        );
        assert_eq!((got[4].1, got[4].2, got[4].3), (S_IFCHR | 0o600, 5, 1));
        assert_eq!(got[5].4, b"abc");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_tree_is_copied_sorted_and_bounded() {
        let d = scratch("tree");
        let src = d.join("set");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("b.toml"), "b").unwrap();
        std::fs::write(src.join("a.toml"), "a").unwrap();
        std::fs::write(src.join("sub/c.toml"), "c").unwrap();
        let mut fs = Initramfs::default();
        fs.tree("scenarios/set", &src).unwrap();
        let paths: Vec<_> = fs.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "scenarios/set",
                "scenarios/set/a.toml",
                "scenarios/set/b.toml",
                "scenarios/set/sub",
                "scenarios/set/sub/c.toml"
            ]
        );
        std::os::unix::fs::symlink("/etc/passwd", src.join("z-link")).unwrap();
        let err = Initramfs::default().tree("s", &src).unwrap_err();
        assert_eq!(err, TreeError::NotPlain(src.join("z-link")));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
