//! `callfleet-recv-floor [connections]`: the receive floor of this machine, now (see
//! `callfleet_tests::recv_floor`), as one line of JSON. `benches/worker-load` runs it before
//! its runs so that every result says how fast the host was.

fn main() -> anyhow::Result<()> {
    let connections = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| anyhow::anyhow!("connections must be a number, got {arg:?}"))?,
        None => 1000,
    };
    let floor = callfleet_tests::recv_floor::tokio_floor(connections)?;
    println!("{}", serde_json::to_string(&floor)?);
    Ok(())
}
