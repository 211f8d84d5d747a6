//! Reading restic's output in bounded memory: stdout collected whole only up to a cap, lines
//! cut at a limit, and stderr kept as a short tail.

use std::collections::VecDeque;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Largest stdout that is collected whole (the JSON of `snapshots` or `forget`): about
/// 150 000 snapshots, far beyond any sane repository.
pub(super) const STDOUT_LIMIT: usize = 64 << 20;
/// Longest line kept from restic's output; longer lines are cut (never buffered whole).
pub(super) const LINE_LIMIT: usize = 64 << 10;
/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
/// Reads all of `reader`, failing beyond [`STDOUT_LIMIT`] bytes.
pub(super) async fn read_capped(reader: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut limited = reader.take(STDOUT_LIMIT as u64 + 1);
    limited.read_to_end(&mut out).await?;
    if out.len() > STDOUT_LIMIT {
        return Err(std::io::Error::other(format!(
            "more than {STDOUT_LIMIT} bytes of output"
        )));
    }
    Ok(out)
}

/// The last [`STDERR_TAIL_LINES`] lines of `reader`, each at most [`LINE_LIMIT`] bytes.
pub async fn stderr_tail(reader: impl AsyncRead + Unpin) -> String {
    let mut tail = Tail::default();
    let mut lines = BoundedLines::new(reader);
    while let Some(line) = lines.next().await {
        tail.push(line);
    }
    tail.into_string()
}

#[derive(Default)]
pub(super) struct Tail(VecDeque<String>);

impl Tail {
    pub(super) fn push(&mut self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        if self.0.len() == STDERR_TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    pub(super) fn into_string(self) -> String {
        Vec::from(self.0).join("\n")
    }
}

/// Lines of a reader, each cut at [`LINE_LIMIT`] bytes without buffering the rest.
pub struct BoundedLines<R> {
    reader: BufReader<R>,
    done: bool,
}

impl<R: AsyncRead + Unpin> BoundedLines<R> {
    /// Lines of `reader`.
    pub fn new(reader: R) -> Self {
        BoundedLines {
            reader: BufReader::new(reader),
            done: false,
        }
    }

    /// The next line without its newline; `None` at the end or on a read error.
    pub async fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let mut line = Vec::new();
        loop {
            let buf = match self.reader.fill_buf().await {
                Ok(buf) => buf,
                Err(_) => {
                    self.done = true;
                    break;
                }
            };
            if buf.is_empty() {
                self.done = true;
                break;
            }
            let (chunk, used, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = LINE_LIMIT.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.reader.consume(used);
            if end {
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
        }
        (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned())
    }
}
