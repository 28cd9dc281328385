//! Reading and writing whole frp messages on a stream.
//!
//! Reads are exact — the 9-byte header, then the body it announces — so nothing past a message is
//! consumed: after `LoginResp` the control connection turns encrypted, and after `StartWorkConn`
//! a work connection carries the user's raw bytes.

use std::io;

use burrow_proto::frame::{FrameDecoder, HEADER_LEN};
use burrow_proto::{Message, MessageError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the stream between messages.
    #[error("the connection was closed")]
    Closed,
    /// The peer closed the stream inside a message.
    #[error("the connection was closed in the middle of a message")]
    Truncated,
    /// The bytes are not a valid frp message.
    #[error(transparent)]
    Protocol(#[from] MessageError),
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads exactly one message.
pub async fn read_msg<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Message, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    let mut have = 0;
    while have < HEADER_LEN {
        let n = r.read(&mut header[have..]).await?;
        if n == 0 {
            return Err(if have == 0 { ReadError::Closed } else { ReadError::Truncated });
        }
        have += n;
    }
    let mut dec = FrameDecoder::new();
    let (_, frame) = dec.decode(&header).map_err(MessageError::from)?;
    let frame = match frame {
        Some(f) => f,
        None => {
            // The header is valid and announces `wanted` body bytes (≤ the frame cap).
            let mut body = vec![0u8; dec.wanted()];
            r.read_exact(&mut body).await.map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    ReadError::Truncated
                } else {
                    ReadError::Io(e)
                }
            })?;
            match dec.decode(&body).map_err(MessageError::from)? {
                (_, Some(f)) => f,
                (_, None) => unreachable!("the body completes the frame"),
            }
        }
    };
    Ok(Message::parse(&frame)?)
}

/// Writes one message and flushes it.
pub async fn write_msg<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, msg: &Message) -> io::Result<()> {
    let bytes = msg.to_bytes().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    w.write_all(&bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::msg::{LoginResp, Pong};

    #[tokio::test]
    async fn reads_exactly_one_message() {
        let mut bytes =
            Message::LoginResp(LoginResp { version: "0.65.0".into(), run_id: "ab".into(), error: String::new() })
                .to_bytes()
                .unwrap();
        bytes.extend_from_slice(b"encrypted-tail");
        let mut r = &bytes[..];
        assert!(matches!(read_msg(&mut r).await.unwrap(), Message::LoginResp(_)));
        assert_eq!(r, b"encrypted-tail");
    }

    #[tokio::test]
    async fn close_vs_truncation_vs_garbage() {
        let mut empty: &[u8] = b"";
        assert!(matches!(read_msg(&mut empty).await, Err(ReadError::Closed)));
        let bytes = Message::Pong(Pong::default()).to_bytes().unwrap();
        let mut cut = &bytes[..bytes.len() - 1];
        assert!(matches!(read_msg(&mut cut).await, Err(ReadError::Truncated)));
        let mut cut = &bytes[..4];
        assert!(matches!(read_msg(&mut cut).await, Err(ReadError::Truncated)));
        let mut huge: &[u8] = b"1\x7f\xff\xff\xff\xff\xff\xff\xff";
        assert!(matches!(read_msg(&mut huge).await, Err(ReadError::Protocol(_))));
        let mut tls: &[u8] = b"\x16\x03\x01\x00\x10garbage";
        assert!(matches!(read_msg(&mut tls).await, Err(ReadError::Protocol(_))));
    }
}
