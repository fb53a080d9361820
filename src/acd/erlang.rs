//! Queueing formulas for staffing and for checking the ACD against theory.
//!
//! * **Erlang C** (M/M/N, callers never give up): the probability that a caller waits,
//!   [`erlang_c`], and the service level [`service_level`].
//! * **Erlang A** (Palm's M/M/N+M, exponential patience): [`erlang_a`], the probability of waiting,
//!   of abandoning and the service level when callers hang up while they wait.
//!
//! Notation: `A` = offered traffic in erlangs = arrival rate × average handling time (AHT),
//! `N` = agents, `t` = service-level threshold (20 s in the Korean KS standard).

use std::time::Duration;

/// Erlang B: the probability that all `agents` are busy in a loss system offered `traffic` erlangs.
/// Computed by the stable recursion `B(0) = 1`, `B(n) = A·B(n−1) / (n + A·B(n−1))`.
pub fn erlang_b(traffic: f64, agents: u32) -> f64 {
    let a = traffic.max(0.0);
    let mut b = 1.0;
    for n in 1..=agents {
        b = a * b / (n as f64 + a * b);
    }
    b
}

/// Erlang C: the probability that a caller has to wait (all `agents` busy) when `traffic` erlangs
/// are offered and nobody abandons:
///
/// `C(N, A) = N·B(N, A) / (N − A·(1 − B(N, A)))`, and 1 when `A >= N` (the queue grows without bound).
pub fn erlang_c(traffic: f64, agents: u32) -> f64 {
    let n = agents as f64;
    if traffic >= n {
        return 1.0;
    }
    if traffic <= 0.0 {
        return 0.0;
    }
    let b = erlang_b(traffic, agents);
    (n * b / (n - traffic * (1.0 - b))).clamp(0.0, 1.0)
}

/// Service level (Erlang C): the share of callers answered within `t`:
///
/// `SL(t) = 1 − C(N, A) · exp(−(N − A) · t / AHT)`, and 0 when `A >= N`.
pub fn service_level(traffic: f64, agents: u32, aht: Duration, t: Duration) -> f64 {
    let n = agents as f64;
    if traffic >= n {
        return 0.0;
    }
    let aht = aht.as_secs_f64();
    if aht <= 0.0 {
        return 1.0;
    }
    let c = erlang_c(traffic, agents);
    (1.0 - c * (-(n - traffic) * t.as_secs_f64() / aht).exp()).clamp(0.0, 1.0)
}

/// Average speed of answer (Erlang C): `ASA = C(N, A) · AHT / (N − A)`; `None` when `A >= N`.
pub fn average_speed_of_answer(traffic: f64, agents: u32, aht: Duration) -> Option<Duration> {
    let n = agents as f64;
    if traffic >= n {
        return None;
    }
    Some(Duration::from_secs_f64(erlang_c(traffic, agents) * aht.as_secs_f64() / (n - traffic)))
}

/// The fewest agents whose Erlang C service level for threshold `t` reaches `target` (0..=1).
pub fn agents_for_service_level(traffic: f64, aht: Duration, t: Duration, target: f64) -> u32 {
    let mut n = traffic.floor().max(0.0) as u32 + 1;
    while service_level(traffic, n, aht, t) < target && n < 1_000_000 {
        n += 1;
    }
    n
}

/// The figures of Erlang A (M/M/N+M).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErlangA {
    /// Probability that an arriving caller finds all agents busy.
    pub p_wait: f64,
    /// Probability that a caller abandons before being served.
    pub p_abandon: f64,
    /// Share of all callers served with a wait of at most `t`.
    pub service_level: f64,
    /// Mean number of callers waiting.
    pub mean_queue: f64,
}

/// Erlang A (Palm 1943; Garnett, Mandelbaum & Reiman 2002): Poisson arrivals at `arrival_per_s`,
/// exponential handling with mean `aht`, exponential patience with mean `patience`, `agents` servers.
///
/// The number of callers in the system is a birth–death process with birth rate `λ` and death rate
/// `min(n, N)·μ + max(n − N, 0)·θ` (`μ = 1/AHT`, `θ = 1/patience`). Its stationary law `π` is
/// `π_n ∝ A^n / n!` for `n ≤ N` and `π_n = π_N · Π_{k=1}^{n−N} λ / (Nμ + kθ)` above (computed in
/// log space and truncated where the terms vanish). Then, by PASTA:
///
/// * `P(wait) = Σ_{n≥N} π_n`,
/// * `P(abandon) = θ · E[Q] / λ` with `E[Q] = Σ_{n>N} (n − N) π_n` (abandonment flow over arrival flow),
/// * `SL(t) = Σ_{n<N} π_n + Σ_{k≥0} π_{N+k} · P(served within t | k ahead)`; a caller with `k`
///   callers ahead moves up at rate `Nμ + kθ` (a service completion or an abandonment ahead), and
///   abandons at rate `θ`. That absorption probability is integrated numerically (RK4) for all `k`
///   at once.
pub fn erlang_a(arrival_per_s: f64, aht: Duration, patience: Duration, agents: u32, t: Duration) -> ErlangA {
    let lambda = arrival_per_s.max(1e-300);
    let mu = 1.0 / aht.as_secs_f64().max(1e-9);
    let theta = 1.0 / patience.as_secs_f64().max(1e-9);
    let n = agents as usize;
    let a = lambda / mu;
    // log terms
    let mut lt: Vec<f64> = Vec::with_capacity(n + 256);
    lt.push(0.0);
    for i in 1..=n {
        let prev = lt[i - 1];
        lt.push(prev + a.ln() - (i as f64).ln());
    }
    let mut max = lt.iter().cloned().fold(f64::MIN, f64::max);
    let mut k = 1usize;
    loop {
        let prev = *lt.last().unwrap();
        let next = prev + lambda.ln() - (n as f64 * mu + k as f64 * theta).ln();
        lt.push(next);
        if next > max {
            max = next;
        }
        if (next < max - 60.0 && next < prev) || k > 2_000_000 {
            break;
        }
        k += 1;
    }
    let w: Vec<f64> = lt.iter().map(|&l| (l - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let pi: Vec<f64> = w.iter().map(|x| x / total).collect();
    let p_wait: f64 = pi[n..].iter().sum();
    let mean_queue: f64 = pi.iter().enumerate().skip(n + 1).map(|(i, p)| (i - n) as f64 * p).sum();
    let p_abandon = (theta * mean_queue / lambda).clamp(0.0, 1.0);
    // served within t among those who found all agents busy
    let kmax = pi.len() - n; // k ahead = 0..kmax
    let mut p: Vec<f64> = pi[n..].to_vec();
    let rate = |k: usize| n as f64 * mu + k as f64 * theta;
    let max_rate = rate(kmax) + theta;
    let horizon = t.as_secs_f64();
    let mut served = 0.0;
    if horizon > 0.0 && !p.is_empty() {
        let steps = ((horizon * max_rate / 0.05).ceil() as usize).max(200);
        let dt = horizon / steps as f64;
        let deriv = |p: &[f64], out: &mut [f64]| -> f64 {
            let len = p.len();
            for i in 0..len {
                let inflow = if i + 1 < len { rate(i + 1) * p[i + 1] } else { 0.0 };
                out[i] = -(rate(i) + theta) * p[i] + inflow;
            }
            rate(0) * p[0]
        };
        let len = p.len();
        let (mut k1, mut k2, mut k3, mut k4) = (vec![0.0; len], vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        let mut tmp = vec![0.0; len];
        for _ in 0..steps {
            let s1 = deriv(&p, &mut k1);
            for i in 0..len {
                tmp[i] = p[i] + 0.5 * dt * k1[i];
            }
            let s2 = deriv(&tmp, &mut k2);
            for i in 0..len {
                tmp[i] = p[i] + 0.5 * dt * k2[i];
            }
            let s3 = deriv(&tmp, &mut k3);
            for i in 0..len {
                tmp[i] = p[i] + dt * k3[i];
            }
            let s4 = deriv(&tmp, &mut k4);
            for i in 0..len {
                p[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
            }
            served += dt / 6.0 * (s1 + 2.0 * s2 + 2.0 * s3 + s4);
        }
    }
    let service_level = ((1.0 - p_wait) + served).clamp(0.0, 1.0);
    ErlangA { p_wait, p_abandon, service_level, mean_queue }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn erlang_c_matches_closed_forms() {
        // M/M/2 with A = 1: C = A^2 / (A^2 + 2(2 − A)(1 + A)) · ... = 1/3 (textbook).
        assert!((erlang_c(1.0, 2) - 1.0 / 3.0).abs() < 1e-12);
        // M/M/3 with A = 2: C = 4/9.
        assert!((erlang_c(2.0, 3) - 4.0 / 9.0).abs() < 1e-12);
        // M/M/1: C = ρ.
        assert!((erlang_c(0.7, 1) - 0.7).abs() < 1e-12);
        assert_eq!(erlang_c(5.0, 5), 1.0);
        assert_eq!(service_level(5.0, 4, s(180), s(20)), 0.0);
    }

    #[test]
    fn service_level_and_staffing() {
        // M/M/1, ρ = 0.5, AHT 100 s: P(W > t) = ρ e^{−(1−ρ) t / AHT}.
        let sl = service_level(0.5, 1, s(100), s(20));
        assert!((sl - (1.0 - 0.5 * (-0.1f64).exp())).abs() < 1e-12);
        // monotone in agents; the staffing answer is the first that reaches the target
        let n = agents_for_service_level(40.0, s(240), s(20), 0.8);
        assert!(service_level(40.0, n, s(240), s(20)) >= 0.8);
        assert!(service_level(40.0, n - 1, s(240), s(20)) < 0.8);
        let asa = average_speed_of_answer(0.5, 1, s(100)).unwrap();
        assert!((asa.as_secs_f64() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn erlang_a_tends_to_erlang_c_with_infinite_patience() {
        let lambda = 38.0 / 240.0;
        let a = erlang_a(lambda, s(240), s(10_000_000), 43, s(20));
        assert!((a.p_wait - erlang_c(38.0, 43)).abs() < 1e-3, "{a:?}");
        assert!((a.service_level - service_level(38.0, 43, s(240), s(20))).abs() < 2e-3, "{a:?}");
        assert!(a.p_abandon < 1e-3);
    }

    #[test]
    fn erlang_a_single_server_with_patience_matches_balance_equations() {
        // M/M/1+M with λ = μ = θ: π_n ∝ 1/n! (n ≥ 1 of the queue part: λ/(μ + kθ) = 1/(1+k)),
        // so π_n = e^{-1}/n!, P(wait) = 1 − e^{-1}, E[Q] = Σ (n−1) π_n = 1 − (1 − e^{-1}) = e^{-1}.
        let a = erlang_a(1.0, s(1), s(1), 1, s(0));
        let e1 = (-1.0f64).exp();
        assert!((a.p_wait - (1.0 - e1)).abs() < 1e-9, "{a:?}");
        assert!((a.mean_queue - e1).abs() < 1e-9, "{a:?}");
        assert!((a.p_abandon - e1).abs() < 1e-9);
        assert!((a.service_level - e1).abs() < 1e-9);
        // patience only helps those who stay: SL with abandonment is above Erlang C's for an overload
        let over = erlang_a(45.0 / 240.0, s(240), s(90), 43, s(20));
        assert!(over.service_level > service_level(45.0, 43, s(240), s(20)));
        assert!(over.p_abandon > 0.01 && over.p_abandon < 0.5, "{over:?}");
    }
}
