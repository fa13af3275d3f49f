//! Entry point of the `canopy` binary; everything happens in [`canopy::cli`].

use std::process::ExitCode;

/// mimalloc rather than the system allocator: the server allocates and frees for every agent
/// request, and glibc's malloc was about a third of its CPU while a deployment reached 10,000
/// edges (docs/BENCHMARKS.md, "Idle cost and fan-out at 10,000 edges").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let code = canopy::cli::run(std::env::args_os(), &mut std::io::stdout());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
