//! Entry point of the `canopy` binary; everything happens in [`canopy::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = canopy::cli::run(std::env::args_os(), &mut std::io::stdout());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
