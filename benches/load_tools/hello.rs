//! The baseline: one trivial tonic method of the same crate, answering
//! from the same allocator; with `signed`, each answer also carries an
//! attestation signed as a check signs one.

use ed25519_dalek::SigningKey;
use tonic::{Request, Response, Status};
use vnid::attest::Keyring;

use crate::claims;
use crate::proto::hello_service_server::{HelloService, HelloServiceServer};
use crate::proto::{HelloRequest, HelloResponse};

struct Hello {
    /// Signs each answer, when set.
    keyring: Option<Keyring>,
}

#[tonic::async_trait]
impl HelloService for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let name = request.into_inner().name;
        let message = match &self.keyring {
            None => format!("hello {name}"),
            Some(keyring) => keyring
                .sign(&claims::typical(name))
                .map_err(|e| Status::internal(e.to_string()))?,
        };
        Ok(Response::new(HelloResponse { message }))
    }
}

/// Serves the baseline at `addr` until killed; `options`: `[]` or `["signed"]`.
pub fn serve(addr: &str, options: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = addr.parse()?;
    let keyring = match options {
        [] => None,
        ["signed"] => Some(Keyring::new(SigningKey::from_bytes(&[7; 32]), vec![])),
        _ => return Err(format!("unknown hello option: {options:?}").into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .max_concurrent_streams(256)
            .add_service(HelloServiceServer::new(Hello { keyring }))
            .serve_with_incoming(incoming)
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
