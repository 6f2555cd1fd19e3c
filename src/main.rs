use std::process::ExitCode;

use clap::Parser;

/// A check allocates and frees many small buffers. With mimalloc an audited
/// check took about a tenth less of the server's CPU than with glibc's
/// malloc, round by round in one run of `benches/builds.sh` (README,
/// "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    vnid::cli::Cli::parse().run()
}
