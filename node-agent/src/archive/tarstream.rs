//! A strictly bounded streaming tar reader.
//!
//! The agent reads archives that anyone able to create a checkpoint could
//! have written, as root. General-purpose tar readers buffer GNU long names
//! and PAX headers of whatever size the header claims; this one caps every
//! buffered piece, verifies header checksums, and hands file data out as a
//! reader bounded by the entry's size. It understands what Go's
//! `archive/tar` writes (the kubelet, containerd and CRI-O use it) and what
//! GNU tar writes: ustar with prefix, GNU long names and base-256 sizes, PAX
//! `path`, `linkpath` and `size`. Sparse files are refused.

use std::io::{self, Read};

use super::ArchiveError;

/// Marker carried inside an `io::Error` when entry data ends early.
#[derive(Debug)]
pub(crate) struct TruncatedAt(pub u64);

impl std::fmt::Display for TruncatedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "archive is truncated at byte {}", self.0)
    }
}

impl std::error::Error for TruncatedAt {}

/// Size of a tar block.
const BLOCK: u64 = 512;
/// Largest PAX extended header accepted. Real ones hold a few records.
const MAX_PAX_BYTES: u64 = 64 * 1024;

/// What kind of object an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0`, `\0`, or contiguous `7`).
    File,
    /// A directory (`5`, or `\0` with a trailing slash).
    Directory,
    /// A symbolic link (`2`).
    Symlink,
    /// A hard link to an earlier entry (`1`).
    Hardlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A named pipe (`6`).
    Fifo,
    /// Anything else (sparse files, volume labels, unknown type flags).
    Unsupported(u8),
}

impl EntryKind {
    /// Human words for error messages.
    pub fn describe(self) -> String {
        match self {
            Self::File => "regular file".into(),
            Self::Directory => "directory".into(),
            Self::Symlink => "symbolic link".into(),
            Self::Hardlink => "hard link".into(),
            Self::CharDevice => "character device".into(),
            Self::BlockDevice => "block device".into(),
            Self::Fifo => "named pipe".into(),
            Self::Unsupported(b'S') => "GNU sparse file".into(),
            Self::Unsupported(0xff) => "PAX sparse file".into(),
            Self::Unsupported(flag) => format!("tar entry of type {:?}", char::from(flag)),
        }
    }

    /// Entries of these kinds carry no data, whatever their size field says
    /// (POSIX; Go's reader does the same).
    fn header_only(self) -> bool {
        !matches!(self, Self::File | Self::Unsupported(_))
    }
}

/// One tar entry's header, with long names and PAX records applied.
#[derive(Debug, Clone)]
pub struct Header {
    /// Raw path, not yet validated.
    pub path: Vec<u8>,
    /// Raw link target for symbolic and hard links.
    pub link: Vec<u8>,
    /// The entry's kind.
    pub kind: EntryKind,
    /// Bytes of data that follow (0 for header-only kinds).
    pub size: u64,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
}

/// PAX records that matter here.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    sparse: bool,
}

/// Streaming reader over the decoded archive.
pub struct TarStream<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    offset: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Headers seen, extension headers included.
    headers: u64,
    max_headers: u64,
    max_path_bytes: u64,
    ended: bool,
}

impl<R: Read> TarStream<R> {
    /// Reads tar entries from `inner`; at most `max_headers` headers and
    /// paths of at most `max_path_bytes` from GNU long-name records.
    pub fn new(inner: R, max_headers: u64, max_path_bytes: usize) -> Self {
        Self {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            headers: 0,
            max_headers,
            max_path_bytes: max_path_bytes as u64,
            ended: false,
        }
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, or `None` at the end of the archive. Data of the
    /// previous entry that was not read is skipped.
    pub fn next_header(&mut self) -> Result<Option<Header>, ArchiveError> {
        if self.ended {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        loop {
            self.skip_rest()?;
            let offset = self.offset;
            let pending = long_name.is_some() || long_link.is_some() || pax.is_some();
            let Some(block) = self.read_block()? else {
                if pending {
                    return Err(ArchiveError::Truncated { offset });
                }
                // A tar without its end marker, cut at a block boundary: what
                // was read is complete, so accept it as GNU tar does.
                self.ended = true;
                return Ok(None);
            };
            if block.iter().all(|b| *b == 0) {
                if pending {
                    return Err(malformed(offset, "extension header without an entry"));
                }
                self.ended = true;
                return Ok(None);
            }
            self.headers += 1;
            if self.headers > self.max_headers {
                return Err(ArchiveError::TooManyEntries {
                    limit: self.max_headers,
                });
            }
            verify_checksum(&block, offset)?;
            let flag = block[156];
            let header_size = numeric(&block[124..136], offset, "size")?;
            match flag {
                b'L' | b'K' => {
                    let slot = if flag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(malformed(offset, "two GNU long names for one entry"));
                    }
                    // The record holds the name and a terminating NUL.
                    if header_size > self.max_path_bytes + 1 {
                        return Err(ArchiveError::LongNameTooLong {
                            offset,
                            len: header_size,
                            limit: self.max_path_bytes,
                        });
                    }
                    let mut data = self.read_record(header_size)?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    *slot = Some(data);
                }
                b'x' | b'g' => {
                    if header_size > MAX_PAX_BYTES {
                        return Err(ArchiveError::PaxTooLarge {
                            offset,
                            len: header_size,
                            limit: MAX_PAX_BYTES,
                        });
                    }
                    let data = self.read_record(header_size)?;
                    // Global headers carry defaults for later entries; none
                    // of their keys matters for what is extracted here.
                    if flag == b'x' {
                        if pax.is_some() {
                            return Err(malformed(offset, "two PAX headers for one entry"));
                        }
                        pax = Some(parse_pax(&data, offset)?);
                    }
                }
                _ => {
                    let pax = pax.unwrap_or_default();
                    let header = self.entry_header(&block, offset, long_name, long_link, pax)?;
                    self.remaining = header.size;
                    self.padding = padding(header.size);
                    return Ok(Some(header));
                }
            }
        }
    }

    fn entry_header(
        &self,
        block: &[u8; 512],
        offset: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Pax,
    ) -> Result<Header, ArchiveError> {
        let ustar = &block[257..263] == b"ustar\0";
        let path = match (long_name, pax.path) {
            (Some(name), _) => name,
            (None, Some(name)) => name,
            (None, None) => {
                let name = cstr(&block[0..100]);
                let prefix = if ustar { cstr(&block[345..500]) } else { &[] };
                if prefix.is_empty() {
                    name.to_vec()
                } else {
                    let mut joined = prefix.to_vec();
                    joined.push(b'/');
                    joined.extend_from_slice(name);
                    joined
                }
            }
        };
        let link = match (long_link, pax.linkpath) {
            (Some(link), _) => link,
            (None, Some(link)) => link,
            (None, None) => cstr(&block[157..257]).to_vec(),
        };
        let flag = block[156];
        let mut kind = match flag {
            b'0' | b'7' => EntryKind::File,
            0 if path.last() == Some(&b'/') => EntryKind::Directory,
            0 => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Unsupported(other),
        };
        if pax.sparse {
            kind = EntryKind::Unsupported(0xff);
        }
        let size = match pax.size {
            Some(size) => size,
            None => numeric(&block[124..136], offset, "size")?,
        };
        let size = if kind.header_only() { 0 } else { size };
        let mode = numeric(&block[100..108], offset, "mode")? & 0o7777;
        Ok(Header {
            path,
            link,
            kind,
            size,
            // Masked to 12 bits above, so it fits.
            mode: u32::try_from(mode).unwrap_or(0),
            uid: numeric(&block[108..116], offset, "uid")?,
            gid: numeric(&block[116..124], offset, "gid")?,
        })
    }

    /// Reads data of the current entry; returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                TruncatedAt(self.offset),
            ));
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// A reader over the current entry's data.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { stream: self }
    }

    fn skip_rest(&mut self) -> Result<(), ArchiveError> {
        let skip = self.remaining + self.padding;
        if skip == 0 {
            return Ok(());
        }
        let copied = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())
            .map_err(ArchiveError::from_read)?;
        self.offset += copied;
        if copied < skip {
            return Err(ArchiveError::Truncated {
                offset: self.offset,
            });
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    /// Reads one block; `None` at a clean end of input.
    fn read_block(&mut self) -> Result<Option<[u8; 512]>, ArchiveError> {
        let mut block = [0u8; 512];
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::from_read(e)),
            }
        }
        self.offset += filled as u64;
        match filled {
            0 => Ok(None),
            512 => Ok(Some(block)),
            _ => Err(ArchiveError::Truncated {
                offset: self.offset,
            }),
        }
    }

    /// Reads an extension header's data (already bounded by the caller) and
    /// its padding.
    fn read_record(&mut self, size: u64) -> Result<Vec<u8>, ArchiveError> {
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let read = (&mut self.inner)
            .take(size)
            .read_to_end(&mut data)
            .map_err(ArchiveError::from_read)?;
        self.offset += read as u64;
        if (read as u64) < size {
            return Err(ArchiveError::Truncated {
                offset: self.offset,
            });
        }
        self.remaining = 0;
        self.padding = padding(size);
        Ok(data)
    }
}

/// Reader over one entry's data, bounded by its size.
pub struct EntryData<'a, R> {
    stream: &'a mut TarStream<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_data(buf)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn malformed(offset: u64, reason: &str) -> ArchiveError {
    ArchiveError::Malformed {
        offset,
        reason: reason.to_string(),
    }
}

/// The bytes of a NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|b| *b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// Parses a numeric header field: octal text, or GNU base-256 when the high
/// bit of the first byte is set.
fn numeric(field: &[u8], offset: u64, what: &str) -> Result<u64, ArchiveError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return Err(malformed(offset, &format!("negative {what} field")));
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| malformed(offset, &format!("{what} field overflows")))?;
        }
        return Ok(value);
    }
    let text = field
        .iter()
        .skip_while(|b| **b == b' ' || **b == 0)
        .take_while(|b| **b != b' ' && **b != 0);
    let mut value: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(malformed(offset, &format!("{what} field is not octal")));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| malformed(offset, &format!("{what} field overflows")))?;
    }
    Ok(value)
}

/// Checks the header checksum; both the unsigned sum (POSIX) and the signed
/// sum (old Unix tars) are accepted.
fn verify_checksum(block: &[u8; 512], offset: u64) -> Result<(), ArchiveError> {
    let mismatch = || {
        malformed(
            offset,
            "header checksum mismatch (not a tar archive, or corrupt)",
        )
    };
    let stored = numeric(&block[148..156], offset, "checksum").map_err(|_| mismatch())?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// Parses PAX records: `"<len> <key>=<value>\n"`, `len` counting the whole
/// record.
fn parse_pax(mut data: &[u8], offset: u64) -> Result<Pax, ArchiveError> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| malformed(offset, "PAX record without length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed(offset, "PAX record length is not a number"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed(offset, "PAX record length is wrong"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| malformed(offset, "PAX record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| malformed(offset, "PAX size is not a number"))?;
                pax.size = Some(size);
            }
            k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
        data = &data[len..];
    }
    Ok(pax)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a header block by hand, so tests control every field.
    pub(crate) fn block(name: &[u8], flag: u8, size_field: &[u8]) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name);
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0000000");
        b[116..123].copy_from_slice(b"0000000");
        b[124..124 + size_field.len()].copy_from_slice(size_field);
        b[136..147].copy_from_slice(b"00000000000");
        b[156] = flag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        fix_checksum(&mut b);
        b
    }

    pub(crate) fn fix_checksum(b: &mut [u8; 512]) {
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|x| u64::from(*x)).sum();
        let text = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(text.as_bytes());
    }

    /// Path, kind, size and data of each entry.
    type Listed = (String, EntryKind, u64, Vec<u8>);

    fn entries(data: &[u8]) -> Result<Vec<Listed>, ArchiveError> {
        let mut stream = TarStream::new(data, 100, 4096);
        let mut out = Vec::new();
        while let Some(h) = stream.next_header()? {
            let mut body = Vec::new();
            stream
                .data()
                .read_to_end(&mut body)
                .map_err(ArchiveError::from_read)?;
            out.push((
                String::from_utf8_lossy(&h.path).into_owned(),
                h.kind,
                h.size,
                body,
            ));
        }
        Ok(out)
    }

    fn with_data(mut archive: Vec<u8>, data: &[u8]) -> Vec<u8> {
        archive.extend_from_slice(data);
        archive.resize(archive.len() + padding(data.len() as u64) as usize, 0);
        archive
    }

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!("checkpoint/{}", "x".repeat(150));
        for (name, body) in [
            ("config.dump", &b"{}"[..]),
            (long.as_str(), b"long"),
            ("empty", b""),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut h, name, body).expect("appends");
        }
        let data = builder.into_inner().expect("finishes");
        let got = entries(&data).expect("reads");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "config.dump");
        assert_eq!(got[0].3, b"{}");
        assert_eq!(got[1].0, long);
        assert_eq!(got[1].3, b"long");
        assert_eq!(got[2].2, 0);
    }

    #[test]
    fn pax_path_and_size_apply_to_the_next_entry() {
        let records = b"29 path=a/very/long/pax/name\n9 size=3\n";
        let mut pax = block(
            b"PaxHeader",
            b'x',
            format!("{:011o}", records.len()).as_bytes(),
        );
        fix_checksum(&mut pax);
        let archive = with_data(pax.to_vec(), records);
        let file = block(b"short", b'0', b"00000000000");
        let archive = with_data([archive, file.to_vec()].concat(), b"abc");
        let got = entries(&archive).expect("reads");
        assert_eq!(
            got,
            vec![(
                "a/very/long/pax/name".into(),
                EntryKind::File,
                3,
                b"abc".to_vec()
            )]
        );
    }

    #[test]
    fn ustar_prefix_is_joined() {
        let mut b = block(b"name", b'0', b"00000000000");
        b[345..351].copy_from_slice(b"prefix");
        fix_checksum(&mut b);
        let got = entries(&b).expect("reads");
        assert_eq!(got[0].0, "prefix/name");
    }

    #[test]
    fn base256_size_is_read() {
        let mut size = [0u8; 12];
        size[0] = 0x80;
        size[11] = 5;
        let b = block(b"f", b'0', &size);
        let archive = with_data(b.to_vec(), b"12345");
        assert_eq!(entries(&archive).expect("reads")[0].2, 5);
    }

    #[test]
    fn header_only_kinds_carry_no_data() {
        // A symlink header claiming 1 GiB of data: the claim is ignored and
        // the next header is read right after.
        let link = block(b"l", b'2', b"10000000000");
        let file = block(b"f", b'0', b"00000000000");
        let got = entries(&[link, file].concat()).expect("reads");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, EntryKind::Symlink);
        assert_eq!(got[0].2, 0);
    }

    #[test]
    fn refusals() {
        let huge_longname = block(b"././@LongLink", b'L', b"77777777777");
        let huge_pax = block(b"PaxHeader", b'x', b"00000200001");
        let mut bad_sum = block(b"f", b'0', b"00000000000");
        bad_sum[0] = b'g';
        let not_octal = block(b"f", b'0', b"0000000009x");
        let truncated = block(b"f", b'0', b"00000001000");
        let longname_then_end = {
            let b = block(b"././@LongLink", b'L', b"00000000002");
            let mut v = with_data(b.to_vec(), b"a\0");
            v.extend_from_slice(&[0u8; 1024]);
            v
        };
        let table: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "huge GNU long name",
                huge_longname.to_vec(),
                "GNU long name of 8589934591 bytes at byte 0 is longer than the limit of 4096",
            ),
            (
                "huge PAX header",
                huge_pax.to_vec(),
                "PAX header of 65537 bytes at byte 0 is larger than the limit of 65536",
            ),
            (
                "bad checksum",
                bad_sum.to_vec(),
                "malformed tar archive at byte 0: header checksum mismatch (not a tar archive, or corrupt)",
            ),
            (
                "not octal",
                not_octal.to_vec(),
                "malformed tar archive at byte 0: size field is not octal",
            ),
            (
                "truncated data",
                truncated.to_vec(),
                "archive is truncated at byte 512",
            ),
            (
                "partial block",
                vec![1u8; 100],
                "archive is truncated at byte 100",
            ),
            (
                "long name without entry",
                longname_then_end,
                "malformed tar archive at byte 1024: extension header without an entry",
            ),
        ];
        for (what, data, want) in table {
            let err = entries(&data).expect_err(what);
            assert_eq!(err.to_string(), want, "{what}");
        }
    }

    #[test]
    fn header_count_is_capped() {
        let f = block(b"f", b'5', b"00000000000");
        let data: Vec<u8> = std::iter::repeat_n(f, 5).flatten().collect();
        let mut stream = TarStream::new(&data[..], 3, 4096);
        let mut n = 0;
        let err = loop {
            match stream.next_header() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("should stop at the limit"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 3);
        assert_eq!(err.to_string(), "archive has more than 3 tar headers");
    }

    #[test]
    fn kinds() {
        for (flag, name, kind) in [
            (b'0', &b"f"[..], EntryKind::File),
            (0, b"f", EntryKind::File),
            (0, b"d/", EntryKind::Directory),
            (b'7', b"f", EntryKind::File),
            (b'1', b"h", EntryKind::Hardlink),
            (b'3', b"c", EntryKind::CharDevice),
            (b'4', b"b", EntryKind::BlockDevice),
            (b'6', b"p", EntryKind::Fifo),
            (b'S', b"s", EntryKind::Unsupported(b'S')),
            (b'V', b"v", EntryKind::Unsupported(b'V')),
        ] {
            let b = block(name, flag, b"00000000000");
            let mut stream = TarStream::new(&b[..], 10, 4096);
            let h = stream.next_header().expect("reads").expect("one entry");
            assert_eq!(h.kind, kind, "{flag}");
        }
        assert_eq!(EntryKind::Unsupported(b'S').describe(), "GNU sparse file");
        assert_eq!(
            EntryKind::Unsupported(b'V').describe(),
            "tar entry of type 'V'"
        );
    }
}
