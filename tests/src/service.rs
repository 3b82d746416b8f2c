//! TCP services the test controls: a listener that can be stopped and restarted on the same
//! port, and servers that misbehave in one precise way.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a [`Service`] treats each connection.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Accept and close.
    Accept,
    /// Read the request, then write these bytes and close.
    Reply(Vec<u8>),
    /// Accept and never say anything (the connection stays open).
    Silent,
}

/// A loopback TCP service on a fixed port.
pub struct Service {
    pub addr: SocketAddr,
    behaviour: Behaviour,
    task: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts on a free port.
    pub async fn start(behaviour: Behaviour) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let mut s = Service {
            addr,
            behaviour,
            task: None,
        };
        s.task = Some(tokio::spawn(serve(listener, s.behaviour.clone())));
        s
    }

    /// Stops listening: new connections are refused. Waits until the socket is closed.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.task = Some(tokio::spawn(serve(listener, self.behaviour.clone())));
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve(listener: TcpListener, behaviour: Behaviour) {
    let mut held = Vec::new();
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        match &behaviour {
            Behaviour::Accept => drop(sock),
            Behaviour::Silent => held.push(sock),
            Behaviour::Reply(bytes) => {
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(&bytes).await;
                });
            }
        }
    }
}
