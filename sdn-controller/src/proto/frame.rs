//! Frames: a 4-byte big-endian length, then that many bytes of JSON.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{AgentMsg, Change, ControllerMsg, MAX_FRAME};

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is larger than {max}")]
    TooLarge { len: usize, max: usize },
    #[error("bad frame: {0}")]
    Decode(#[from] serde_json::Error),
}

/// One frame: the length, then `msg` as JSON.
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    seal(buf)
}

/// A [`ControllerMsg::Delta`] frame whose `changes` are already JSON (`changes_json`): one
/// change shared by thousands of hosts is serialized once, not once per connection.
pub fn delta_frame(base: u64, version: u64, changes_json: &[u8]) -> Result<Vec<u8>, ProtoError> {
    use std::io::Write;
    let mut buf = Vec::with_capacity(4 + 64 + changes_json.len());
    buf.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        r#"{{"type":"delta","base":{base},"version":{version},"changes":"#
    );
    buf.extend_from_slice(changes_json);
    buf.push(b'}');
    seal(buf)
}

/// A delta's JSON as [`delta_frame`] lays it out: its base, version and the changes' JSON
/// (unparsed). `None` for any other message or layout (decode those whole).
pub fn delta_parts(json: &[u8]) -> Option<(u64, u64, &[u8])> {
    fn number(b: &[u8]) -> Option<(u64, &[u8])> {
        let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
        Some((std::str::from_utf8(&b[..n]).ok()?.parse().ok()?, &b[n..]))
    }
    let (base, rest) = number(json.strip_prefix(br#"{"type":"delta","base":"#)?)?;
    let (version, rest) = number(rest.strip_prefix(br#","version":"#)?)?;
    let changes = rest.strip_prefix(br#","changes":"#)?.strip_suffix(b"}")?;
    Some((base, version, changes))
}

/// Put the length of what follows the first 4 bytes of `buf` into them.
fn seal(mut buf: Vec<u8>) -> Result<Vec<u8>, ProtoError> {
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Write one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), ProtoError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    w.write_all(&frame(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// A message as a frame's JSON is read back.
pub trait Frame: DeserializeOwned {
    fn decode(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }
}

impl Frame for AgentMsg {}

impl Frame for ControllerMsg {
    /// A delta (nearly every frame of a stream) is read as a plain struct: serde reads an
    /// internally tagged enum by first copying the whole object into a tree of its own.
    fn decode(json: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct DeltaBody {
            base: u64,
            version: u64,
            changes: Vec<Change>,
        }
        if json.starts_with(br#"{"type":"delta","#) {
            // `type` is skipped as an unknown field.
            let d: DeltaBody = serde_json::from_slice(json)?;
            return Ok(ControllerMsg::Delta {
                base: d.base,
                version: d.version,
                changes: d.changes,
            });
        }
        serde_json::from_slice(json)
    }
}

/// Where the first frame of `buf` stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Split<'a> {
    /// Whole: its JSON, and the bytes it takes with its length.
    Whole { json: &'a [u8], len: usize },
    /// Not yet: the bytes it needs in all (its length's 4 while that is not there).
    Need(usize),
}

/// The first frame of `buf` (a length over [`MAX_FRAME`] is an error): for readers that
/// gather bytes their own way, as [`FrameReader`] does.
pub fn split(buf: &[u8]) -> Result<Split<'_>, ProtoError> {
    let Some(head) = buf.get(..4) else {
        return Ok(Split::Need(4));
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(match buf.get(4..4 + len) {
        Some(json) => Split::Whole { json, len: 4 + len },
        None => Split::Need(4 + len),
    })
}

/// Reads frames, cancel-safe: what a read brings stays in the reader's buffer until a whole
/// frame is there, so [`FrameReader::next`] can race a timer in `select!` without losing a
/// frame cut in two (and one read may bring several frames: one syscall for all of them).
#[derive(Debug)]
pub struct FrameReader<R> {
    r: R,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    at: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> FrameReader<R> {
        FrameReader {
            r,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream (between frames).
    pub async fn next<T: Frame>(&mut self) -> Result<Option<T>, ProtoError> {
        loop {
            let need = match split(&self.buf[self.at..])? {
                Split::Whole { json, len } => {
                    let msg = T::decode(json);
                    self.at += len;
                    if self.at == self.buf.len() {
                        // A large frame's buffer is not kept (10,000 connections each
                        // holding the size of their Full would be gigabytes).
                        if self.buf.capacity() > READ_CHUNK {
                            self.buf = Vec::new();
                        }
                        self.buf.clear();
                        self.at = 0;
                    }
                    return Ok(Some(msg?));
                }
                Split::Need(need) => need,
            };
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            self.buf
                .reserve(need.saturating_sub(self.buf.len()).max(READ_CHUNK));
            // Cancel-safe: a read either completes into `buf` or reads nothing.
            if self.r.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }
}

/// What a [`FrameReader`] asks of the socket at least, per read.
const READ_CHUNK: usize = 4 << 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::PROTOCOL;

    #[tokio::test]
    async fn a_spliced_delta_is_the_same_frame_as_a_serialized_one() {
        let changes = vec![Change::EndpointDel {
            network: "blue".into(),
            ip: "10.244.1.5".parse().unwrap(),
        }];
        let json = serde_json::to_vec(&changes).unwrap();
        let msg = ControllerMsg::Delta {
            base: 7,
            version: 9,
            changes,
        };
        let spliced = delta_frame(7, 9, &json).unwrap();
        assert_eq!(spliced, frame(&msg).unwrap(), "byte for byte");
        let Ok(Split::Whole { json: whole, .. }) = split(&spliced) else {
            panic!("a whole frame")
        };
        assert_eq!(delta_parts(whole), Some((7, 9, &json[..])));
        let full = ControllerMsg::Full {
            version: 3,
            state: overlay_vxlan::HostDesired {
                format: overlay_vxlan::FORMAT,
                networks: vec![],
            },
        };
        assert_eq!(delta_parts(&frame(&full).unwrap()[4..]), None);
        assert_eq!(delta_parts(br#"{"type":"delta","base":x"#), None);
        // Read back through a pipe of 3 bytes, racing a timer: frames cut anywhere and reads
        // cancelled midway lose nothing.
        let (mut a, b) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                a.write_all(&spliced).await.unwrap();
            }
        });
        let mut r = FrameReader::new(b);
        let (mut got, mut cancelled) = (0, 0);
        while got < 4 {
            tokio::select! {
                m = r.next::<ControllerMsg>() => {
                    assert_eq!(m.unwrap().unwrap(), msg);
                    got += 1;
                }
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        writer.await.unwrap();
        assert!(
            r.next::<ControllerMsg>().await.unwrap().is_none(),
            "clean end"
        );
        assert!(cancelled > 0, "no read was cancelled midway");
    }

    #[tokio::test]
    async fn frames_round_trip_and_refuse_what_is_too_large() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut b = FrameReader::new(b);
        let hello = AgentMsg::Hello {
            protocol: PROTOCOL,
            host: "h1".into(),
            version: Some(7),
        };
        write_frame(&mut a, &hello).await.unwrap();
        let got: AgentMsg = b.next().await.unwrap().unwrap();
        assert_eq!(got, hello);
        let json = serde_json::to_string(&hello).unwrap();
        assert_eq!(
            json,
            r#"{"type":"hello","protocol":1,"host":"h1","version":7}"#
        );
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        let e = b.next::<AgentMsg>().await.unwrap_err();
        assert!(matches!(e, ProtoError::TooLarge { .. }), "{e}");
        drop(a);
        let (a2, b2) = tokio::io::duplex(64);
        drop(a2);
        assert!(FrameReader::new(b2)
            .next::<AgentMsg>()
            .await
            .unwrap()
            .is_none());
    }
}
