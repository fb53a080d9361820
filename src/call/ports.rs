//! RTP port allocation: even ports of the configured range (the odd one above is RTCP's).

use std::collections::VecDeque;

/// A pool of even RTP ports, handed out least-recently-released first so that a port is not
/// reused while stray packets of its last call may still arrive.
#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> PortPool {
        let first = if min.is_multiple_of(2) { min } else { min.saturating_add(1) };
        let free = (first..max).step_by(2).collect();
        PortPool { free }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    pub fn release(&mut self, port: u16) {
        self.free.push_back(port);
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_and_reuses_the_oldest_released_last() {
        let mut p = PortPool::new(10001, 10010);
        assert_eq!(p.available(), 4);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!((a, b), (10002, 10004));
        p.release(a);
        assert_eq!(p.allocate(), Some(10006));
        assert_eq!(p.allocate(), Some(10008));
        assert_eq!(p.allocate(), Some(10002));
        assert_eq!(p.allocate(), None);
    }
}
