//! Loopback ports for stand-in servers.

use std::net::TcpListener;
use std::sync::Mutex;

/// A TCP port free on every address in `addrs` (loopback 127.0.0.x) at the time of
/// the call, never handed out twice by this test process (tests run in parallel on
/// the same addresses).
pub fn free_port(addrs: &[&str]) -> u16 {
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"));
        let free_everywhere = addrs
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok());
        if free_everywhere && !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}
