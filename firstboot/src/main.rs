//! `piimg-firstboot`: the on-card agent (placeholder until the agent lands).

fn main() {
    eprintln!("piimg-firstboot: not implemented yet");
    std::process::exit(2);
}
