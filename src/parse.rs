//! Value parsers that every component's flags share, so `--x 0` or `--x soon` fail the same way.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// An address to listen on: `IP:port`, or `localhost:port` (the IPv4 loopback, as most tools read it).
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.strip_prefix("localhost:").map(str::parse::<u16>) {
        Some(Ok(port)) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        _ => Err("use an IP address and a port: 127.0.0.1:4000 for this machine only, 0.0.0.0:4000 for all".into()),
    }
}

/// A client's text as a refusal quotes it: cut to 128 characters, enough to recognize it, bounded whatever
/// was sent.
pub fn clip(text: &str) -> String {
    text.chars().take(128).collect()
}

pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Accepts humantime ("15s", "500ms", "1m") and plain seconds ("15").
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 15s, 500ms)"))?,
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr("localhost:4000"), Ok("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(listen_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(listen_addr("example.com:4000").unwrap_err().contains("0.0.0.0:4000"));
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(duration("0s").is_err());
        assert!(duration("soon").is_err());
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err());
    }
}
