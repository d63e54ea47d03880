//! `callfleet-loadgen`: N simulated calls against one worker, with a summary at the end
//! (`--json` for machines). See `callfleet_tests::loadgen`.

use clap::Parser;

use callfleet_tests::loadgen::{LoadConfig, run};

/// mimalloc: the generator shares the machine with the worker it loads: its allocations are
/// frames and replies at 50 per second per call, cheaper under mimalloc than glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = LoadConfig::parse();
    let json = config.json;
    let report = run(config).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
