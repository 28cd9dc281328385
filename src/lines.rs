//! Lines from a pipe another program writes (the host's commands on stdin, frpc's log): any
//! bytes, and a cap on how much one line may hold, so neither a stray byte nor a line without end
//! can stop the reader or grow its memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read by [`LineReader::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line (without its `\n`), as bytes: not necessarily UTF-8.
    Bytes(&'a [u8]),
    /// A line longer than the cap; its bytes were skipped to its end.
    TooLong,
}

/// Reads lines of at most `max` bytes.
pub struct LineReader<R> {
    inner: R,
    line: Vec<u8>,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Lines of `inner`, each at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, line: Vec::new(), max }
    }

    /// The next line; `None` at the end of the input. A last line without `\n` still counts.
    pub async fn next(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.line.clear();
        let mut too_long = false;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(match (too_long, self.line.is_empty()) {
                    (true, _) => Some(Line::TooLong),
                    (false, true) => None,
                    (false, false) => Some(Line::Bytes(&self.line)),
                });
            }
            let (take, end) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i, Some(i + 1)),
                None => (buf.len(), None),
            };
            if self.line.len() + take > self.max {
                too_long = true;
                self.line.clear();
            } else if !too_long {
                self.line.extend_from_slice(&buf[..take]);
            }
            self.inner.consume(end.unwrap_or(take));
            if end.is_some() {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                return Ok(Some(if too_long { Line::TooLong } else { Line::Bytes(&self.line) }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_bytes_and_a_cap() {
        let input: &[u8] = b"one\r\n\xff\xfe bad utf-8\n0123456789abcdef\nlast";
        // A tiny buffer: lines arrive across many reads.
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(3, input), 12);
        assert_eq!(r.next().await.unwrap(), Some(Line::Bytes(b"one")));
        assert_eq!(r.next().await.unwrap(), Some(Line::Bytes(b"\xff\xfe bad utf-8")));
        assert_eq!(r.next().await.unwrap(), Some(Line::TooLong));
        assert_eq!(r.next().await.unwrap(), Some(Line::Bytes(b"last")));
        assert_eq!(r.next().await.unwrap(), None);
        let mut r = LineReader::new(&b"endless line without its end"[..], 4);
        assert_eq!(r.next().await.unwrap(), Some(Line::TooLong));
        assert_eq!(r.next().await.unwrap(), None);
    }
}
