use std::io::{ErrorKind, Read};
use std::ops::Range;

/// Cuts a FASTA file into chunks on record boundaries, reading it once from
/// `reader` (buffered internally).
///
/// A chunk ends before the first `>` header line that starts at least
/// `chunk_bytes` after the chunk's start; the first chunk starts at 0, so
/// the chunks cover the whole file. A file that is empty or blank has no
/// chunk. Fails when the first non-blank character is not a `>` at the start
/// of a line: the file is not FASTA.
pub fn plan_chunks<R: Read>(mut reader: R, chunk_bytes: u64) -> Result<Vec<Range<u64>>, String> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut ranges = Vec::new();
    let mut chunk_start = 0u64;
    let mut offset = 0u64;
    let mut at_line_start = true;
    let mut seen_header = false;
    let mut line = 1u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let data = &buffer[..n];
        let mut i = 0;
        if !seen_header {
            while i < n && !seen_header {
                let b = data[i];
                match b {
                    b'\n' => {
                        at_line_start = true;
                        line += 1;
                    }
                    b' ' | b'\t' | b'\r' => at_line_start = false,
                    b'>' if at_line_start => seen_header = true,
                    _ => {
                        let line_end = data[i..]
                            .iter()
                            .position(|&b| b == b'\n' || b == b'\r')
                            .map_or(n, |j| i + j);
                        let found = String::from_utf8_lossy(&data[i..line_end.min(i + 40)]);
                        return Err(format!(
                            "it is not FASTA: the first non-blank line must be a `>` header, \
                             but line {line} starts with {found:?}"
                        ));
                    }
                }
                i += 1;
            }
            if seen_header {
                at_line_start = false;
            }
        }
        for (j, &b) in data.iter().enumerate().skip(i) {
            if at_line_start && b == b'>' {
                let position = offset + j as u64;
                if position - chunk_start >= chunk_bytes {
                    ranges.push(chunk_start..position);
                    chunk_start = position;
                }
            }
            at_line_start = b == b'\n';
        }
        offset += n as u64;
    }
    if seen_header {
        ranges.push(chunk_start..offset);
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one byte at a time, to cross every buffer boundary.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.split_first() {
                Some((&b, rest)) if !buf.is_empty() => {
                    buf[0] = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    /// Where the header lines start, found the plain way.
    fn header_offsets(text: &str) -> Vec<u64> {
        let mut offsets = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.starts_with('>') {
                offsets.push(offset as u64);
            }
            offset += line.len();
        }
        offsets
    }

    #[test]
    fn chunks_start_at_headers_and_cover_the_file() {
        let text = crate::generate_fasta(3, 40, 200);
        let headers = header_offsets(&text);
        for chunk_bytes in [1u64, 500, 2000, 1 << 30] {
            let ranges = plan_chunks(text.as_bytes(), chunk_bytes).unwrap();
            let trickled = plan_chunks(Trickle(text.as_bytes()), chunk_bytes).unwrap();
            assert_eq!(ranges, trickled);
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, text.len() as u64);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert!(headers.contains(&pair[1].start));
                assert!(pair[0].end - pair[0].start >= chunk_bytes);
            }
            if chunk_bytes == 1 {
                assert_eq!(ranges.len(), headers.len(), "one record per chunk");
            }
        }
    }

    #[test]
    fn blank_files_have_no_chunk_and_other_text_is_refused() {
        assert_eq!(plan_chunks(&b""[..], 10), Ok(vec![]));
        assert_eq!(plan_chunks(&b"\r\n \n"[..], 10), Ok(vec![]));
        assert_eq!(
            plan_chunks(&b"\n\n>a\nAC\n"[..], 1),
            Ok(vec![Range { start: 0, end: 8 }])
        );
        let err = plan_chunks(&b"\nhello world\n>a\n"[..], 10).unwrap_err();
        assert!(err.contains("not FASTA"), "{err}");
        assert!(err.contains("line 2 starts with \"hello world\""), "{err}");
        let err = plan_chunks(&b"  >a\nAC\n"[..], 10).unwrap_err();
        assert!(err.contains("not FASTA"), "{err}");
        let err = plan_chunks(&[0x89, b'P', b'N', b'G', 0, 1][..], 10).unwrap_err();
        assert!(err.contains("not FASTA"), "{err}");
    }
}
