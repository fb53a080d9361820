//! Erlang B and C: how many agents a queue needs for a target service level.
//!
//! Traffic `A` in erlangs = arrival rate × average handling time (calls per hour × AHT in hours).
//! With `N` agents (`N > A`), callers arriving at random (Poisson) and exponential handling times (M/M/N):
//!
//! - Erlang B (blocking, no queue), by the stable recursion `B(0) = 1`, `B(n) = A·B(n−1) / (n + A·B(n−1))`;
//! - Erlang C, the probability that a caller has to wait: `C(N, A) = N·B / (N − A·(1 − B))` with `B = B(N, A)`;
//! - service level, the share answered within `T`: `SL = 1 − C(N, A) · e^(−(N − A)·T / AHT)`;
//! - average speed of answer: `ASA = C(N, A) · AHT / (N − A)`.
//!
//! With `N <= A` the queue grows without bound: `C = 1`, `SL = 0`, `ASA = ∞`.
//! The recursion avoids the factorials and powers of the textbook formula, so it stays exact for
//! thousands of agents.

/// Erlang B: the probability that all `servers` are busy with `traffic` erlangs offered (no queue).
pub fn erlang_b(servers: u32, traffic: f64) -> f64 {
    if traffic <= 0.0 {
        return if servers == 0 { 1.0 } else { 0.0 };
    }
    let mut b = 1.0;
    for n in 1..=servers {
        b = traffic * b / (n as f64 + traffic * b);
    }
    b
}

/// Erlang C: the probability that a caller must wait, with `servers` agents and `traffic` erlangs.
pub fn erlang_c(servers: u32, traffic: f64) -> f64 {
    c_from_b(servers, traffic, erlang_b(servers, traffic))
}

fn c_from_b(servers: u32, traffic: f64, b: f64) -> f64 {
    if traffic <= 0.0 {
        return 0.0;
    }
    let n = servers as f64;
    if n <= traffic {
        return 1.0;
    }
    n * b / (n - traffic * (1.0 - b))
}

/// The share of callers answered within `target_s` seconds (0..=1).
pub fn service_level(servers: u32, traffic: f64, aht_s: f64, target_s: f64) -> f64 {
    sl_from_c(servers, traffic, aht_s, target_s, erlang_c(servers, traffic))
}

fn sl_from_c(servers: u32, traffic: f64, aht_s: f64, target_s: f64, c: f64) -> f64 {
    let n = servers as f64;
    if traffic <= 0.0 {
        return 1.0;
    }
    if n <= traffic || aht_s <= 0.0 {
        return if n > traffic { 1.0 } else { 0.0 };
    }
    (1.0 - c * (-(n - traffic) * target_s / aht_s).exp()).clamp(0.0, 1.0)
}

/// Average speed of answer in seconds (∞ when `servers <= traffic`).
pub fn asa(servers: u32, traffic: f64, aht_s: f64) -> f64 {
    let n = servers as f64;
    if traffic <= 0.0 {
        return 0.0;
    }
    if n <= traffic {
        return f64::INFINITY;
    }
    erlang_c(servers, traffic) * aht_s / (n - traffic)
}

/// The fewest agents for which the service level at `target_s` reaches `target_sl` (0..=1), for
/// `traffic` erlangs with handling time `aht_s`. 0 when there is no traffic. One pass of the Erlang B
/// recursion: O(answer).
pub fn agents_needed(traffic: f64, aht_s: f64, target_s: f64, target_sl: f64) -> u32 {
    if traffic <= 0.0 || !traffic.is_finite() {
        return 0;
    }
    let target_sl = target_sl.clamp(0.0, 1.0 - 1e-12);
    let mut b = 1.0;
    let mut n: u32 = 0;
    loop {
        n += 1;
        b = traffic * b / (n as f64 + traffic * b);
        if (n as f64) > traffic {
            let c = c_from_b(n, traffic, b);
            if sl_from_c(n, traffic, aht_s, target_s, c) >= target_sl {
                return n;
            }
        }
        if n == u32::MAX {
            return n;
        }
    }
}

/// Offered traffic in erlangs: `calls` arriving over `period_s` seconds, each held `aht_s` seconds.
pub fn traffic(calls: f64, period_s: f64, aht_s: f64) -> f64 {
    if period_s <= 0.0 {
        return 0.0;
    }
    calls / period_s * aht_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_traffic_needs_no_agent() {
        assert_eq!(agents_needed(0.0, 180.0, 20.0, 0.8), 0);
        assert_eq!(erlang_c(3, 0.0), 0.0);
    }

    #[test]
    fn overloaded_queue_never_meets_its_target() {
        assert_eq!(erlang_c(10, 10.0), 1.0);
        assert_eq!(service_level(9, 10.0, 180.0, 20.0), 0.0);
        assert!(asa(10, 10.0, 180.0).is_infinite());
    }

    #[test]
    fn agents_needed_is_the_first_count_meeting_the_target() {
        for &(a, target) in &[(2.5, 0.8), (10.0, 0.8), (47.3, 0.9), (300.0, 0.95)] {
            let n = agents_needed(a, 180.0, 20.0, target);
            assert!(service_level(n, a, 180.0, 20.0) >= target);
            assert!(service_level(n - 1, a, 180.0, 20.0) < target, "A={a} n={n}");
        }
    }
}
