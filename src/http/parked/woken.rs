//! A parked stream's socket once the stream is woken: written to at once, and registered with the
//! runtime's reactor only when the stream must wait on it.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::socket::Parkable;

/// A socket just registered with the reactor reads as full and empty until the reactor has polled it,
/// so the frames that woke a stream would wait for that turn and a second poll of the stream, behind the
/// registration's system call. Written first and registered after, they go out at once.
pub(super) enum Woken {
    Bare(std::net::TcpStream),
    Registered(TcpStream),
    /// Registering failed: the stream ends.
    Gone,
}

impl Woken {
    fn registered(&mut self) -> io::Result<&mut TcpStream> {
        if let Woken::Bare(_) = self {
            if let Woken::Bare(tcp) = std::mem::replace(self, Woken::Gone) {
                *self = Woken::Registered(TcpStream::from_std(tcp)?);
            }
        }
        match self {
            Woken::Registered(tcp) => Ok(tcp),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Parkable for Woken {
    fn parkable(&self) -> bool {
        !matches!(self, Woken::Gone)
    }

    fn into_parked(self) -> Option<std::net::TcpStream> {
        match self {
            Woken::Bare(tcp) => Some(tcp),
            Woken::Registered(tcp) => tcp.into_parked(),
            Woken::Gone => None,
        }
    }
}

impl AsyncRead for Woken {
    /// Registers the socket: a stream reads only to learn that its client has gone, once it has nothing
    /// to write, and must wait for that. A client already gone is reported by the registration itself.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().registered()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for Woken {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Woken::Bare(tcp) = this {
            match tcp.write(bytes) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
        Pin::new(this.registered()?).poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Woken::Registered(tcp) => Pin::new(tcp).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Woken::Bare(tcp) => Poll::Ready(tcp.shutdown(std::net::Shutdown::Write)),
            Woken::Registered(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Woken::Gone => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::task::Waker;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn pair() -> (Woken, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (Woken::Bare(server), client)
    }

    fn read(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[tokio::test]
    async fn writes_go_out_at_once_and_the_socket_is_registered_only_to_wait() {
        let (mut woken, mut client) = pair();
        let mut cx = Context::from_waker(Waker::noop());
        let written = Pin::new(&mut woken).poll_write(&mut cx, b"id: 1\n\n");
        assert!(matches!(written, Poll::Ready(Ok(7))), "{written:?}");
        assert!(matches!(woken, Woken::Bare(_)), "no registration for a write the socket took");
        assert_eq!(read(&mut client, 7), b"id: 1\n\n");
        let mut probe = [0; 1];
        assert!(Pin::new(&mut woken).poll_read(&mut cx, &mut ReadBuf::new(&mut probe)).is_pending());
        assert!(matches!(woken, Woken::Registered(_)), "registered to wait for the client");
        let parked = woken.into_parked().expect("the socket, off the reactor");
        (&parked).write_all(b"x").unwrap();
        assert_eq!(read(&mut client, 1), b"x");
    }

    #[tokio::test]
    async fn a_client_gone_reads_as_the_end_once_the_socket_is_registered() {
        let (mut woken, client) = pair();
        drop(client);
        let mut probe = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), woken.read(&mut probe)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        assert!(matches!(woken, Woken::Registered(_)));
    }
}
