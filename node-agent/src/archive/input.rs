//! The byte stream under the tar reader: one pass over the archive file that
//! hashes and counts every byte, with gzip recognised by its magic bytes.

use std::io::{self, BufReader, Chain, Cursor, Read};

use flate2::bufread::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::ArchiveError;

/// Identity of an archive file: what `sha256sum` and `stat -c %s` print.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveDigest {
    /// Lower-case hex SHA-256 of the archive bytes as stored (compressed if
    /// the archive is compressed).
    pub sha256: String,
    /// Size of the archive in bytes, as stored.
    pub size: u64,
}

/// SHA-256 and size of whatever `reader` yields, in one pass (for an
/// archive received or written elsewhere; extraction and the writer compute
/// the same digest on the way).
pub fn digest_reader<R: Read>(reader: R) -> Result<ArchiveDigest, ArchiveError> {
    let mut hashing = HashingReader::new(reader, u64::MAX);
    io::copy(&mut hashing, &mut io::sink()).map_err(ArchiveError::from_read)?;
    Ok(hashing.finish())
}

/// [`digest_reader`] for a file on disk.
pub fn digest_file(path: &std::path::Path) -> Result<ArchiveDigest, ArchiveError> {
    let file = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
        action: "opening archive",
        path: path.to_path_buf(),
        source,
    })?;
    digest_reader(std::io::BufReader::with_capacity(READ_BUFFER, file))
}

/// Marker carried inside an `io::Error` when the archive is longer than
/// [`super::Limits::max_archive_bytes`].
#[derive(Debug)]
pub(crate) struct ArchiveTooLarge(pub u64);

impl std::fmt::Display for ArchiveTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "archive is larger than the limit of {} bytes", self.0)
    }
}

impl std::error::Error for ArchiveTooLarge {}

/// Hashes and counts what passes through, and stops a stream that exceeds
/// the archive size limit.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    fn finish(self) -> ArchiveDigest {
        ArchiveDigest {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.count,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(ArchiveTooLarge(self.limit)));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

type Raw<R> = BufReader<Chain<Cursor<Vec<u8>>, HashingReader<R>>>;

/// The decoded tar stream over a hashed archive file.
pub(crate) enum Decoded<R: Read> {
    /// An uncompressed tar, as the kubelet, containerd and CRI-O write it.
    Plain(Raw<R>),
    /// A gzip-compressed tar.
    Gzip(Box<MultiGzDecoder<Raw<R>>>),
}

/// Buffer size for reading the archive: CRIU page images are large and
/// sequential, so big reads pay off.
const READ_BUFFER: usize = 1 << 20;

impl<R: Read> Decoded<R> {
    /// Sniffs the compression from the first bytes and sets up decoding.
    pub(crate) fn new(inner: R, max_archive_bytes: u64) -> Result<Self, ArchiveError> {
        let mut hashing = HashingReader::new(inner, max_archive_bytes);
        let mut magic = Vec::with_capacity(6);
        (&mut hashing)
            .take(6)
            .read_to_end(&mut magic)
            .map_err(ArchiveError::from_read)?;
        if let Some(name) = unsupported_compression(&magic) {
            return Err(ArchiveError::UnsupportedCompression { name });
        }
        let gzip = magic.starts_with(&[0x1f, 0x8b]);
        let raw = BufReader::with_capacity(READ_BUFFER, Cursor::new(magic).chain(hashing));
        Ok(if gzip {
            Self::Gzip(Box::new(MultiGzDecoder::new(raw)))
        } else {
            Self::Plain(raw)
        })
    }

    /// Reads the rest of the archive file, so that the digest covers all of
    /// it (bytes after the tar end marker included), and returns the digest.
    pub(crate) fn finish(self) -> Result<ArchiveDigest, ArchiveError> {
        let mut raw = match self {
            Self::Plain(raw) => raw,
            Self::Gzip(decoder) => decoder.into_inner(),
        };
        io::copy(&mut raw, &mut io::sink()).map_err(ArchiveError::from_read)?;
        let (_, hashing) = raw.into_inner().into_inner();
        Ok(hashing.finish())
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(raw) => raw.read(buf),
            Self::Gzip(decoder) => decoder.read(buf),
        }
    }
}

/// Names compressions that are recognised but not accepted, so the error says
/// what the file is instead of "bad tar header".
fn unsupported_compression(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_covers_every_byte() {
        let data = b"not a tar at all, but hashed all the same".to_vec();
        let mut decoded = Decoded::new(&data[..], u64::MAX).expect("opens");
        let mut first = [0u8; 3];
        decoded.read_exact(&mut first).expect("reads");
        let digest = decoded.finish().expect("finishes");
        assert_eq!(digest.size, data.len() as u64);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn digest_of_a_reader() {
        let data = vec![7u8; 3 * READ_BUFFER + 5];
        let digest = digest_reader(&data[..]).expect("digests");
        assert_eq!(digest.size, data.len() as u64);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn gzip_is_recognised_by_magic() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(b"hello").expect("compresses");
        let gz = enc.finish().expect("compresses");
        let mut decoded = Decoded::new(&gz[..], u64::MAX).expect("opens");
        assert!(matches!(decoded, Decoded::Gzip(_)));
        let mut out = String::new();
        decoded.read_to_string(&mut out).expect("decodes");
        assert_eq!(out, "hello");
        let digest = decoded.finish().expect("finishes");
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(&gz)));
    }

    #[test]
    fn other_compressions_are_named() {
        for (magic, name) in [
            (&[0x28u8, 0xb5, 0x2f, 0xfd, 0, 0][..], "zstd"),
            (b"BZh91AY", "bzip2"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        ] {
            match Decoded::new(magic, u64::MAX) {
                Err(ArchiveError::UnsupportedCompression { name: got }) => assert_eq!(got, name),
                other => panic!("{name}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn archive_size_limit_stops_the_stream() {
        let data = vec![0u8; 4096];
        let mut decoded = Decoded::new(&data[..], 100).expect("opens");
        let err = io::copy(&mut decoded, &mut io::sink()).expect_err("too large");
        assert_eq!(
            ArchiveError::from_read(err).to_string(),
            "archive is larger than the limit of 100 bytes"
        );
    }
}
