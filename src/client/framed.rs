//! Reading and writing whole frp messages on a stream, in either wire version.
//!
//! Reads are exact — the header, then the body it announces — so nothing past a message is
//! consumed: after `LoginResp` the control connection turns encrypted, and after `StartWorkConn`
//! a work connection carries the user's raw bytes.

use std::io;

use burrow_proto::frame::{self, Frame, Header};
use burrow_proto::{v2, Message, MessageError, Wire};
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

/// Reads exactly one message framed as `wire` frames it.
pub async fn read_msg<R: AsyncRead + Unpin + ?Sized>(r: &mut R, wire: Wire) -> Result<Message, ReadError> {
    Ok(match wire {
        Wire::V1 => Message::parse(&read_frame::<frame::V1, _>(r).await?)?,
        Wire::V2 => v2::parse_message(&read_frame::<v2::V2, _>(r).await?)?,
    })
}

/// Reads exactly one frame: the header, checked, then the body it announces (within the cap).
async fn read_frame<H: Header, R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Frame<H::Type>, ReadError>
where
    MessageError: From<H::Error>,
{
    let mut dec = frame::Decoder::<H>::new();
    let mut header = [0u8; 16];
    let mut have = 0;
    while have < H::LEN {
        let n = r.read(&mut header[have..H::LEN]).await?;
        if n == 0 {
            return Err(if have == 0 { ReadError::Closed } else { ReadError::Truncated });
        }
        have += n;
    }
    if let (_, Some(f)) = dec.decode(&header[..H::LEN]).map_err(MessageError::from)? {
        return Ok(f);
    }
    let mut body = vec![0u8; dec.wanted()];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Truncated,
        _ => ReadError::Io(e),
    })?;
    Ok(dec.decode(&body).map_err(MessageError::from)?.1.expect("the body completes the frame"))
}

/// Writes the first message of a connection and flushes it; in wire v2 the magic goes first.
pub async fn write_first_msg<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, msg: &Message, wire: Wire) -> io::Result<()> {
    let invalid = |e: MessageError| io::Error::new(io::ErrorKind::InvalidInput, e);
    let bytes = match wire {
        Wire::V1 => msg.to_bytes().map_err(|e| invalid(e.into()))?,
        Wire::V2 => {
            let mut b = v2::MAGIC.to_vec();
            v2::encode_message(msg, &mut b).map_err(|e| invalid(e.into()))?;
            b
        }
    };
    w.write_all(&bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::msg::{LoginResp, NewWorkConn, Pong, StartWorkConn};

    #[tokio::test]
    async fn reads_exactly_one_message() {
        let mut bytes =
            Message::LoginResp(LoginResp { version: "0.65.0".into(), run_id: "ab".into(), error: String::new() })
                .to_bytes()
                .unwrap();
        bytes.extend_from_slice(b"encrypted-tail");
        let mut r = &bytes[..];
        assert!(matches!(read_msg(&mut r, Wire::V1).await.unwrap(), Message::LoginResp(_)));
        assert_eq!(r, b"encrypted-tail");
        let mut bytes = Vec::new();
        let start = StartWorkConn { proxy_name: "web".into(), ..Default::default() };
        v2::encode_message(&Message::StartWorkConn(start.clone()), &mut bytes).unwrap();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut r = &bytes[..];
        assert_eq!(read_msg(&mut r, Wire::V2).await.unwrap(), Message::StartWorkConn(start));
        assert_eq!(r, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_first_message_carries_the_magic_in_v2_only() {
        let hello = Message::NewWorkConn(NewWorkConn { run_id: "r".into(), ..Default::default() });
        let mut v1 = Vec::new();
        write_first_msg(&mut v1, &hello, Wire::V1).await.unwrap();
        assert_eq!(v1, hello.to_bytes().unwrap());
        let mut v2_bytes = Vec::new();
        write_first_msg(&mut v2_bytes, &hello, Wire::V2).await.unwrap();
        let rest = v2_bytes.strip_prefix(&v2::MAGIC).unwrap();
        assert_eq!(read_msg(&mut &rest[..], Wire::V2).await.unwrap(), hello);
    }

    #[tokio::test]
    async fn close_vs_truncation_vs_garbage() {
        for wire in [Wire::V1, Wire::V2] {
            let mut empty: &[u8] = b"";
            assert!(matches!(read_msg(&mut empty, wire).await, Err(ReadError::Closed)));
            let mut bytes = Vec::new();
            match wire {
                Wire::V1 => bytes = Message::Pong(Pong::default()).to_bytes().unwrap(),
                Wire::V2 => v2::encode_message(&Message::Pong(Pong::default()), &mut bytes).unwrap(),
            }
            let mut cut = &bytes[..bytes.len() - 1];
            assert!(matches!(read_msg(&mut cut, wire).await, Err(ReadError::Truncated)));
            let mut cut = &bytes[..4];
            assert!(matches!(read_msg(&mut cut, wire).await, Err(ReadError::Truncated)));
            let mut tls: &[u8] = b"\x16\x03\x01\x00\x10garbage";
            assert!(matches!(read_msg(&mut tls, wire).await, Err(ReadError::Protocol(_))), "{wire}");
        }
        let mut huge: &[u8] = b"1\x7f\xff\xff\xff\xff\xff\xff\xff";
        assert!(matches!(read_msg(&mut huge, Wire::V1).await, Err(ReadError::Protocol(_))));
        let mut huge: &[u8] = b"\x00\x10\x00\x00\xff\xff\xff\xff";
        let e = read_msg(&mut huge, Wire::V2).await.unwrap_err().to_string();
        assert!(e.contains("exceeds the 65536-byte limit"), "{e}");
    }
}
