//! Accepting connections without letting a silent or hostile peer hold
//! one forever: at most `max_connections` at once (one over the cap is
//! closed at once), TCP keepalive, a deadline on the TLS handshake, and a
//! deadline on the first bytes of HTTP/2 (its 24-byte preface) after it.
//! A connection that misses a deadline is closed; one that makes them is
//! handed to the server, which bounds its life (`max_connection_age`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// The client's HTTP/2 connection preface: what must arrive in time.
const PREFACE_BYTES: usize = 24;

/// How connections are let in.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub first_bytes_timeout: Duration,
    pub tcp_keepalive: Option<Duration>,
}

/// Connections let in, and refused or closed by these rules.
#[derive(Debug, Default)]
pub struct Connections {
    /// Handed to the server (handshake made).
    pub accepted: AtomicU64,
    /// Closed as they arrived: the cap was reached.
    pub over_cap: AtomicU64,
    /// Closed for a failed or late TLS handshake.
    pub handshake: AtomicU64,
}

/// Accepts on `listener`, turns each TCP connection into `IO` with
/// `upgrade` (the TLS handshake, or nothing), and yields it wrapped in its
/// cap permit and first-bytes deadline. The loop ends when the server
/// stops reading the stream.
pub fn incoming<IO, U, F>(
    listener: TcpListener,
    admission: Admission,
    connections: Arc<Connections>,
    upgrade: U,
) -> ReceiverStream<io::Result<Guarded<IO>>>
where
    IO: Send + 'static,
    U: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(admission.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors, most likely: let some go.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                connections.over_cap.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_connections = admission.max_connections,
                    "connection refused: the server holds as many as it may"
                );
                drop(tcp);
                continue;
            };
            if let Err(error) = prepare(&tcp, admission.tcp_keepalive) {
                tracing::debug!(%error, "cannot set TCP options");
            }
            let handshake = upgrade(tcp);
            let tx = tx.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                let io = match tokio::time::timeout(admission.handshake_timeout, handshake).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(error)) => {
                        connections.handshake.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        connections.handshake.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                connections.accepted.fetch_add(1, Ordering::Relaxed);
                let guarded = Guarded::new(io, permit, admission.first_bytes_timeout);
                let _ = tx.send(Ok(guarded)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

fn prepare(tcp: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    if let Some(idle) = keepalive {
        let params = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle.div_f32(4.0).max(Duration::from_secs(1)));
        socket2::SockRef::from(tcp).set_tcp_keepalive(&params)?;
    }
    Ok(())
}

/// A connection let in: it holds its place under the cap until dropped,
/// and fails its reads if the HTTP/2 preface has not arrived in time.
pub struct Guarded<IO> {
    inner: IO,
    /// Until the preface is in: how much of it is, and the deadline.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
    _slot: OwnedSemaphorePermit,
}

impl<IO> Guarded<IO> {
    fn new(inner: IO, slot: OwnedSemaphorePermit, first_bytes: Duration) -> Self {
        Self {
            inner,
            preface: Some((
                0,
                Box::pin(tokio::time::sleep_until(Instant::now() + first_bytes)),
            )),
            _slot: slot,
        }
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some((got, deadline)) = &mut this.preface else {
            return polled;
        };
        if let Poll::Ready(Ok(())) = polled {
            *got += buf.filled().len() - before;
            if *got >= PREFACE_BYTES {
                this.preface = None;
            }
            return polled;
        }
        if polled.is_pending() {
            ready!(deadline.as_mut().poll(cx));
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface in time",
            )));
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
