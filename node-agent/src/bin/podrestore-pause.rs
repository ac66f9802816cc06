//! `podrestore-pause`: the placeholder init of a test sandbox, PID 1 of its PID
//! namespace, like a pod's pause container. See `sandbox::pause_main`.

fn main() -> std::process::ExitCode {
    podrestore_agent::sandbox::pause_main()
}
