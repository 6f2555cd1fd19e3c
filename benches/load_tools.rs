//! Helpers of `benches/load.sh` (run by hand, not by the tests):
//!
//!   load_tools frame verify ID NAME OUT   a gRPC frame of a VerifyRequest
//!   load_tools frame hello OUT            a gRPC frame of a HelloRequest
//!   load_tools hello ADDR                 the baseline server: one trivial
//!                                         tonic method of the same crate
//!
//! A gRPC frame is a 0 byte (not compressed), the length as a big-endian
//! u32, and the protobuf message: what h2load sends as the request body.

use prost::Message;
use tonic::{Request, Response, Status};
use vnid::pb;
use vnid::pb::bench::hello_service_server::{HelloService, HelloServiceServer};

fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

struct Hello;

#[tonic::async_trait]
impl HelloService for Hello {
    async fn say_hello(
        &self,
        request: Request<pb::bench::HelloRequest>,
    ) -> Result<Response<pb::bench::HelloResponse>, Status> {
        let message = format!("hello {}", request.into_inner().name);
        Ok(Response::new(pb::bench::HelloResponse { message }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["frame", "verify", id, name, out] => {
            let request = pb::VerifyRequest {
                request_id: "load-1".into(),
                id_number: (*id).into(),
                claims: Some(pb::Claims {
                    full_name: (*name).into(),
                    ..Default::default()
                }),
                purpose: pb::Purpose::Healthcare.into(),
                name_match: pb::NameMatch::Exact.into(),
            };
            std::fs::write(out, frame(&request))?;
        }
        ["frame", "hello", out] => {
            std::fs::write(
                out,
                frame(&pb::bench::HelloRequest {
                    name: "vnid".into(),
                }),
            )?;
        }
        ["hello", addr] => {
            let addr: std::net::SocketAddr = addr.parse()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .max_concurrent_streams(256)
                    .add_service(HelloServiceServer::new(Hello))
                    .serve_with_incoming(incoming)
                    .await?;
                Ok::<(), Box<dyn std::error::Error>>(())
            })?;
        }
        _ => eprintln!("usage: see the comment at the top of benches/load_tools.rs"),
    }
    Ok(())
}
