//! What the benches share beyond the world: their command-line knobs.

/// The number after `name` on the bench's command line (`cargo bench --bench x -- --name 8`).
pub fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}
