//! A minimal initramfs writer: the `newc` cpio format the kernel unpacks into its rootfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst), uncompressed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One entry of the image.
#[derive(Clone, Debug)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// Files of an initramfs, keyed by absolute path; parents are added as directories.
#[derive(Clone, Debug, Default)]
pub struct Image {
    entries: BTreeMap<String, Entry>,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path} for the initramfs: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is dynamically linked (it names an ELF interpreter); the guest has no shared \
         libraries: build it statically"
    )]
    NotStatic { path: PathBuf },
    #[error("cannot write the initramfs {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl Image {
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.insert(path, Entry::Dir { mode: 0o755 })
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        self.insert(path, Entry::File { mode, data })
    }

    /// Copies a host executable, which must be statically linked.
    pub fn static_exe(&mut self, path: &str, host: &Path) -> Result<&mut Self, ImageError> {
        let data = fs::read(host).map_err(|source| ImageError::Read {
            path: host.to_owned(),
            source,
        })?;
        if has_interpreter(&data) {
            return Err(ImageError::NotStatic {
                path: host.to_owned(),
            });
        }
        Ok(self.file(path, 0o755, data))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.insert(
            path,
            Entry::CharDev {
                mode: 0o600,
                major,
                minor,
            },
        )
    }

    fn insert(&mut self, path: &str, entry: Entry) -> &mut Self {
        let relative = path.trim_start_matches('/');
        let mut parent = String::new();
        for component in relative
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = if parent.is_empty() {
                component.into()
            } else {
                parent + "/" + component
            };
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(relative.to_owned(), entry);
        self
    }

    /// Writes the image to `path` in cpio `newc` format.
    pub fn write_to(&self, path: &Path) -> Result<(), ImageError> {
        let wrap = |source| ImageError::Write {
            path: path.to_owned(),
            source,
        };
        let mut out = io::BufWriter::new(fs::File::create(path).map_err(wrap)?);
        self.write(&mut out).map_err(wrap)?;
        out.flush().map_err(wrap)
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        // Paths sort before their children, so every directory precedes its contents.
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let (mode, data, rdev) = match entry {
                Entry::Dir { mode } => (0o040000 | mode, &[][..], (0, 0)),
                Entry::File { mode, data } => (0o100000 | mode, &data[..], (0, 0)),
                Entry::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Entry::CharDev { mode, major, minor } => {
                    (0o020000 | mode, &[][..], (*major, *minor))
                }
            };
            let header = Header {
                ino: ino as u32 + 1,
                mode,
                size: data.len() as u32,
                rdev,
            };
            write_record(out, &header, name, data)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            size: 0,
            rdev: (0, 0),
        };
        write_record(out, &trailer, "TRAILER!!!", &[])
    }
}

struct Header {
    ino: u32,
    mode: u32,
    size: u32,
    rdev: (u32, u32),
}

/// One `newc` record: 110-byte ASCII header, NUL-terminated name and data, each padded to 4.
fn write_record(out: &mut impl Write, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
    let nlink = if h.mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        h.ino,
        h.mode,
        0,
        0,
        nlink,
        0,
        h.size,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut header = String::from("070701");
    for field in fields {
        header.push_str(&format!("{field:08x}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&padding(header.len() + name.len() + 1))?;
    out.write_all(data)?;
    out.write_all(&padding(data.len()))
}

fn padding(len: usize) -> Vec<u8> {
    vec![0; (4 - len % 4) % 4]
}

/// True when `data` is an ELF file with a `PT_INTERP` program header (a dynamic executable).
fn has_interpreter(data: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let le_u16 = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let le_u32 = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let le_u64 = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    // ELF64 little-endian only: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if !data.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(count)) = (le_u64(0x20), le_u16(0x36), le_u16(0x38))
    else {
        return false;
    };
    (0..count as usize)
        .filter_map(|i| le_u32(phoff as usize + i * entsize as usize))
        .any(|p_type| p_type == PT_INTERP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_aligned_and_parents_come_first() {
        let mut image = Image::default();
        image
            .file("/etc/hostname", 0o644, b"guest\n".to_vec())
            .symlink("/bin/sh", "busybox");
        let mut bytes = Vec::new();
        image.write(&mut bytes).unwrap();

        let text = String::from_utf8_lossy(&bytes);
        let order: Vec<usize> = [
            "bin\0",
            "bin/sh\0",
            "etc\0",
            "etc/hostname\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|name| {
            text.find(name)
                .unwrap_or_else(|| panic!("{name:?} missing"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "order {order:?}");
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(text.matches("070701").count(), 5);
    }

    /// A 64-byte ELF64 header followed by one program header of type `p_type`.
    fn elf_with_program_header(p_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&p_type.to_le_bytes());
        elf
    }

    #[test]
    fn a_dynamic_executable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (dynamic, fixed) = (dir.path().join("dynamic"), dir.path().join("static"));
        fs::write(&dynamic, elf_with_program_header(3)).unwrap();
        fs::write(&fixed, elf_with_program_header(1)).unwrap();

        let mut image = Image::default();
        let err = image
            .static_exe("/bin/a", &dynamic)
            .expect_err("PT_INTERP means dynamic");
        assert!(matches!(err, ImageError::NotStatic { .. }), "{err}");
        image
            .static_exe("/bin/b", &fixed)
            .expect("PT_LOAD only is static");
    }
}
