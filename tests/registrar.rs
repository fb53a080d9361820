//! The registrar in virtual time: softphones REGISTER as raw bytes, answers are parsed back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use callgate::sip::digest::{Algorithm, Challenge, Credentials};
use callgate::sip::msg::{HeaderName, Message};
use callgate::sip::registrar::{
    RegEvent, Registrar, RegistrarConfig, UserCred, GUESS_LIMIT, LOCKOUT, MAX_CONTACTS_PER_REQUEST,
};
use callgate::sip::{Peer, Rng};

const DOMAIN: &str = "callgate.example";
const REALM: &str = "callgate";

fn registrar() -> Registrar {
    registrar_with(RegistrarConfig::default())
}

fn registrar_with(cfg: RegistrarConfig) -> Registrar {
    let users = (1001..=1003)
        .map(|n| UserCred::from_password("demo", &n.to_string(), REALM, &format!("demo{n}")))
        .collect();
    let mut r = Registrar::new(cfg, users, &mut Rng::seeded(42));
    r.set_wall_clock(t0(), 1_289_690_940_000);
    r
}

fn t0() -> Instant {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn at(secs: u64) -> Instant {
    t0() + Duration::from_secs(secs)
}

fn peer(s: &str) -> Peer {
    Peer::udp(s.parse::<SocketAddr>().unwrap())
}

/// A softphone: its own Call-ID, CSeq and From tag, sending from `src`.
struct Phone {
    user: String,
    password: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    src: Peer,
    nc: u32,
    challenge: Option<Challenge>,
}

impl Phone {
    fn new(user: &str, password: &str, src: &str) -> Phone {
        Phone {
            user: user.into(),
            password: password.into(),
            call_id: format!("{user}-{}@{src}", password.len()),
            from_tag: format!("ft{user}"),
            cseq: 0,
            src: peer(src),
            nc: 0,
            challenge: None,
        }
    }

    /// A REGISTER with these extra header lines; CSeq advances each time.
    fn request(&mut self, extra: &[String]) -> Message {
        self.cseq += 1;
        let mut s = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK{}x{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{u}@{DOMAIN}>;tag={}\r\n\
             To: <sip:{u}@{DOMAIN}>\r\n\
             Call-ID: {}\r\n\
             CSeq: {} REGISTER\r\n",
            self.cseq,
            self.call_id.len(),
            self.from_tag,
            self.call_id,
            self.cseq,
            u = self.user,
        );
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        let m = Message::parse(Bytes::from(s)).expect("test REGISTER parses");
        m.validate_request().expect("test REGISTER is valid");
        m
    }

    /// The Authorization line answering the last challenge with `alg` (nc advances).
    fn auth(&mut self, alg: Algorithm) -> String {
        self.nc += 1;
        let ch = self.challenge.clone().expect("challenged before");
        let ch = Challenge { algorithm: alg, ..ch };
        let c = Credentials::answer(
            &ch,
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            &self.user,
            &self.password,
            "0a4f113b",
            self.nc,
        );
        format!("Authorization: {}", c.to_header_value())
    }

    /// Sends a REGISTER; remembers a challenge from a 401.
    fn send(&mut self, r: &mut Registrar, now: Instant, extra: &[String]) -> Message {
        let req = self.request(extra);
        let resp = Message::parse(r.handle_register(now, &req, self.src)).expect("response parses");
        assert!(resp.validate_response().is_ok());
        assert!(
            resp.to_hdr().unwrap().tag().is_some(),
            "every final response has a To tag"
        );
        if resp.status() == Some(401) {
            self.challenge = Some(first_challenge(&resp));
            self.nc = 0;
        }
        resp
    }

    /// Challenge, then answer with `alg`: the final response.
    fn register(&mut self, r: &mut Registrar, now: Instant, alg: Algorithm, extra: &[String]) -> Message {
        let resp = self.send(r, now, extra);
        assert_eq!(resp.status(), Some(401));
        let mut with = extra.to_vec();
        with.push(self.auth(alg));
        self.send(r, now, &with)
    }

    /// Another request on the nonce already held (next nc).
    fn again(&mut self, r: &mut Registrar, now: Instant, alg: Algorithm, extra: &[String]) -> Message {
        let mut with = extra.to_vec();
        with.push(self.auth(alg));
        self.send(r, now, &with)
    }
}

fn first_challenge(resp: &Message) -> Challenge {
    Challenge::parse(resp.header(HeaderName::WwwAuthenticate).expect("a challenge")).unwrap()
}

fn challenges(resp: &Message) -> Vec<Challenge> {
    resp.header_all(HeaderName::WwwAuthenticate)
        .map(|v| Challenge::parse(v).unwrap())
        .collect()
}

fn contacts(resp: &Message) -> Vec<String> {
    resp.header_values(HeaderName::Contact).map(str::to_owned).collect()
}

fn events(r: &mut Registrar) -> Vec<RegEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn h(s: &str) -> String {
    s.to_owned()
}

fn contact(uri: &str) -> String {
    format!("Contact: <{uri}>")
}

#[test]
fn challenge_then_answer_registers_with_contact_date_and_source() {
    let mut r = registrar();
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let extra = [contact("sip:1001@192.168.1.20:5062"), h("Expires: 600")];
    let first = p.send(&mut r, at(0), &extra);
    assert_eq!(first.status(), Some(401));
    assert_eq!(first.reason(), Some("Unauthorized"));
    let chs = challenges(&first);
    assert_eq!(chs.len(), 2);
    assert_eq!(chs[0].algorithm, Algorithm::Sha256, "SHA-256 offered first");
    assert_eq!(chs[1].algorithm, Algorithm::Md5);
    assert_eq!(chs[0].nonce, chs[1].nonce);
    assert!(chs.iter().all(|c| c.realm == REALM && c.opaque.is_some() && !c.stale));
    assert!(first
        .header(HeaderName::WwwAuthenticate)
        .unwrap()
        .contains("qop=\"auth\""));
    assert!(
        r.lookup("demo", "1001").is_empty(),
        "nothing bound before authentication"
    );

    let mut extra2 = extra.to_vec();
    extra2.push(p.auth(Algorithm::Sha256));
    let ok = p.send(&mut r, at(0), &extra2);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(contacts(&ok), vec!["<sip:1001@192.168.1.20:5062>;expires=600"]);
    assert_eq!(ok.header(HeaderName::Date), Some("Sat, 13 Nov 2010 23:29:00 GMT"));
    let top_via = ok.top_via().unwrap();
    assert_eq!(top_via.param("received"), Some(Some("203.0.113.5")));
    assert_eq!(top_via.rport, Some(Some(40312)));

    let b = r.lookup("demo", "1001");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].contact, "sip:1001@192.168.1.20:5062");
    assert_eq!(b[0].source, p.src);
    assert!(b[0].behind_nat(), "private contact behind a public source");
    assert_eq!(b[0].expires, at(600));
    assert_eq!(b[0].call_id, p.call_id);
    assert_eq!(b[0].cseq, 2);
    assert_eq!(
        events(&mut r),
        vec![RegEvent::Registered {
            tenant: "demo".into(),
            user: "1001".into(),
            first: true
        }]
    );
    assert!(r.lookup("demo", "1002").is_empty());
    assert!(r.lookup("other", "1001").is_empty());
}

#[test]
fn md5_answer_works_too_and_date_follows_virtual_time() {
    let mut r = registrar();
    let mut p = Phone::new("1002", "demo1002", "198.51.100.9:5060");
    let ok = p.register(&mut r, at(61), Algorithm::Md5, &[contact("sip:1002@198.51.100.9")]);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header(HeaderName::Date), Some("Sat, 13 Nov 2010 23:30:01 GMT"));
    assert_eq!(
        contacts(&ok),
        vec!["<sip:1002@198.51.100.9>;expires=3600"],
        "default expiry"
    );
    assert!(!r.lookup("demo", "1002")[0].behind_nat());
}

/// Masks what may legitimately differ between two 401s: the nonce value, and the To user.
fn shape(resp: &Message) -> Vec<(String, String)> {
    resp.headers()
        .map(|h| {
            let v = match h.name {
                HeaderName::WwwAuthenticate => {
                    let n = Challenge::parse(h.value).unwrap().nonce;
                    h.value.replace(&n, "NONCE")
                }
                // Echoed from the request, which names different users.
                HeaderName::To | HeaderName::From => h.value.replace("9999", "USER").replace("1001", "USER"),
                HeaderName::Via => h.value.split(";branch=").next().unwrap().to_owned(),
                HeaderName::CSeq => "N REGISTER".to_owned(),
                _ => h.value.to_owned(),
            };
            (h.raw_name.to_owned(), v)
        })
        .collect()
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_401() {
    let mut r = registrar();
    let extra = [contact("sip:x@192.0.2.1")];
    let mut wrong = Phone::new("1001", "guess", "192.0.2.1:5060");
    let mut unknown = Phone::new("9999", "guess", "192.0.2.1:5060");
    unknown.call_id = wrong.call_id.clone();
    unknown.from_tag = wrong.from_tag.clone();

    let a0 = wrong.send(&mut r, at(0), &extra);
    let b0 = unknown.send(&mut r, at(0), &extra);
    let a = wrong.again(&mut r, at(0), Algorithm::Sha256, &extra);
    let b = unknown.again(&mut r, at(0), Algorithm::Sha256, &extra);
    let a_md5 = wrong.again(&mut r, at(0), Algorithm::Md5, &extra);
    let b_md5 = unknown.again(&mut r, at(0), Algorithm::Md5, &extra);
    for resp in [&a0, &b0, &a, &b, &a_md5, &b_md5] {
        assert_eq!(resp.status(), Some(401));
        assert_eq!(resp.reason(), Some("Unauthorized"));
        assert_eq!(resp.body().len(), 0);
    }
    // The refusal looks exactly like the first challenge, and the same for both.
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(shape(&a_md5), shape(&b_md5));
    assert_eq!(shape(&a0), shape(&a));
    assert_eq!(shape(&b0), shape(&b));
    assert_eq!(a.raw().len(), b.raw().len(), "same length on the wire");
    // And the nonces do differ: masking hid something real.
    assert_ne!(first_challenge(&a).nonce, first_challenge(&b).nonce);
    assert!(r.lookup("demo", "1001").is_empty());
}

#[test]
fn stale_nonce_gets_stale_true_only_with_the_right_password() {
    let cfg = RegistrarConfig::default();
    let ttl = cfg.nonce_ttl.as_secs();
    let mut r = registrar_with(cfg);
    let extra = [contact("sip:1001@192.168.1.20:5062")];
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    assert_eq!(p.send(&mut r, at(0), &extra).status(), Some(401));
    let old = p.challenge.clone().unwrap();

    // Right password, nonce too old.
    let stale = p.again(&mut r, at(ttl + 1), Algorithm::Sha256, &extra);
    assert_eq!(stale.status(), Some(401));
    let chs = challenges(&stale);
    assert!(chs.iter().all(|c| c.stale), "both challenges say stale=true");
    assert_ne!(chs[0].nonce, old.nonce);

    // Wrong password with an old nonce: a plain challenge.
    let mut bad = Phone::new("1001", "nope", "203.0.113.5:40312");
    bad.challenge = Some(old.clone());
    let r2 = bad.again(&mut r, at(ttl + 1), Algorithm::Sha256, &extra);
    assert_eq!(r2.status(), Some(401));
    assert!(challenges(&r2).iter().all(|c| !c.stale));

    // The client retries on the fresh nonce without asking the user.
    let ok = p.again(&mut r, at(ttl + 1), Algorithm::Sha256, &extra);
    assert_eq!(ok.status(), Some(200));
    // Within the lifetime, still fine (no stale at exactly ttl).
    let ok = p.again(&mut r, at(2 * ttl + 1), Algorithm::Md5, &extra);
    assert_eq!(ok.status(), Some(200));
}

#[test]
fn replayed_nonce_count_is_challenged_and_next_count_accepted() {
    let mut r = registrar();
    let extra = [contact("sip:1001@192.168.1.20:5062")];
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    assert_eq!(p.register(&mut r, at(0), Algorithm::Sha256, &extra).status(), Some(200));
    events(&mut r);
    let held = p.challenge.clone().unwrap();
    // Replay: same nonce, same nc=1 (with a new CSeq, as a replaying attacker would send).
    p.nc = 0;
    let replay = p.again(&mut r, at(5), Algorithm::Sha256, &extra);
    assert_eq!(replay.status(), Some(401));
    assert!(challenges(&replay).iter().all(|c| !c.stale));
    assert_ne!(first_challenge(&replay).nonce, held.nonce, "a fresh nonce");
    // The next count on the held nonce is fine.
    p.challenge = Some(held.clone());
    p.nc = 1;
    assert_eq!(p.again(&mut r, at(6), Algorithm::Sha256, &extra).status(), Some(200));
    // The count may skip ahead...
    p.challenge = Some(held.clone());
    p.nc = 9;
    assert_eq!(p.again(&mut r, at(7), Algorithm::Md5, &extra).status(), Some(200));
    // ...but never go back.
    p.challenge = Some(held);
    p.nc = 4;
    assert_eq!(p.again(&mut r, at(8), Algorithm::Sha256, &extra).status(), Some(401));
    assert!(
        events(&mut r).is_empty(),
        "refreshes of the same contact report nothing"
    );
}

#[test]
fn two_contacts_best_q_first_then_most_recent() {
    let mut r = registrar();
    let mut desk = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let ok = desk.register(
        &mut r,
        at(0),
        Algorithm::Sha256,
        &[
            h("Contact: <sip:1001@192.168.1.20:5062>;q=0.5, <sip:1001@192.168.1.20:5064>;q=0.9;expires=120"),
            h("Expires: 900"),
        ],
    );
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        contacts(&ok),
        vec![
            "<sip:1001@192.168.1.20:5064>;expires=120;q=0.9",
            "<sip:1001@192.168.1.20:5062>;expires=900;q=0.5"
        ]
    );
    // A second device without q (ranks as 1.0) registers later.
    let mut soft = Phone::new("1001", "demo1001", "198.51.100.7:5060");
    let ok = soft.register(&mut r, at(10), Algorithm::Md5, &[contact("sip:1001@198.51.100.7")]);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(contacts(&ok).len(), 3, "the 200 lists every binding of the AOR");
    assert_eq!(contacts(&ok)[1], "<sip:1001@192.168.1.20:5064>;expires=110;q=0.9");
    let order: Vec<&str> = r.lookup("demo", "1001").iter().map(|b| b.contact.as_str()).collect();
    assert_eq!(
        order,
        vec![
            "sip:1001@198.51.100.7",
            "sip:1001@192.168.1.20:5064",
            "sip:1001@192.168.1.20:5062"
        ]
    );
    assert_eq!(r.lookup("demo", "1001")[0].source, soft.src);
    // Same q: the most recently refreshed first.
    let ok = desk.again(
        &mut r,
        at(20),
        Algorithm::Sha256,
        &[h("Contact: <sip:1001@192.168.1.20:5062>;q=1")],
    );
    assert_eq!(ok.status(), Some(200));
    let order: Vec<&str> = r.lookup("demo", "1001").iter().map(|b| b.contact.as_str()).collect();
    assert_eq!(order[0], "sip:1001@192.168.1.20:5062");
    assert_eq!(
        events(&mut r),
        vec![
            RegEvent::Registered {
                tenant: "demo".into(),
                user: "1001".into(),
                first: true
            },
            RegEvent::Registered {
                tenant: "demo".into(),
                user: "1001".into(),
                first: false
            },
        ]
    );
}

#[test]
fn expiry_fires_at_the_right_instant_and_refresh_extends() {
    let mut r = registrar();
    let extra = [contact("sip:1001@192.168.1.20:5062"), h("Expires: 120")];
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(p.register(&mut r, at(0), Algorithm::Sha256, &extra).status(), Some(200));
    events(&mut r);
    assert_eq!(r.poll_timeout(), Some(at(120)));

    // Refresh half-way: the deadline moves, nothing is reported.
    assert_eq!(p.again(&mut r, at(60), Algorithm::Sha256, &extra).status(), Some(200));
    assert_eq!(r.poll_timeout(), Some(at(180)));
    r.handle_timeout(at(120));
    assert_eq!(r.lookup("demo", "1001").len(), 1);
    assert!(events(&mut r).is_empty());

    // Not a moment early.
    r.handle_timeout(at(180) - Duration::from_millis(1));
    assert_eq!(r.lookup("demo", "1001").len(), 1);
    assert!(events(&mut r).is_empty());
    r.handle_timeout(at(180));
    assert!(r.lookup("demo", "1001").is_empty());
    assert_eq!(
        events(&mut r),
        vec![RegEvent::Unregistered {
            tenant: "demo".into(),
            user: "1001".into(),
            last: true,
            expired: true
        }]
    );
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn per_contact_expiry_removes_one_binding_of_two() {
    let mut r = registrar();
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let ok = p.register(
        &mut r,
        at(0),
        Algorithm::Sha256,
        &[
            h("Contact: <sip:1001@10.0.0.1>;expires=60, <sip:1001@10.0.0.2>"),
            h("Expires: 300"),
        ],
    );
    assert_eq!(ok.status(), Some(200));
    events(&mut r);
    assert_eq!(r.poll_timeout(), Some(at(60)));
    r.handle_timeout(at(60));
    assert_eq!(r.lookup("demo", "1001").len(), 1);
    assert_eq!(
        events(&mut r),
        vec![RegEvent::Unregistered {
            tenant: "demo".into(),
            user: "1001".into(),
            last: false,
            expired: true
        }]
    );
    assert_eq!(r.poll_timeout(), Some(at(300)));
}

#[test]
fn unregister_one_and_contact_star_removes_all() {
    let mut r = registrar();
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let two = [h("Contact: <sip:1001@10.0.0.1>, <sip:1001@10.0.0.2>")];
    assert_eq!(p.register(&mut r, at(0), Algorithm::Sha256, &two).status(), Some(200));
    events(&mut r);

    let ok = p.again(
        &mut r,
        at(1),
        Algorithm::Sha256,
        &[h("Contact: <sip:1001@10.0.0.1>;expires=0")],
    );
    assert_eq!(ok.status(), Some(200));
    assert_eq!(contacts(&ok), vec!["<sip:1001@10.0.0.2>;expires=3599"]);
    assert_eq!(
        events(&mut r),
        vec![RegEvent::Unregistered {
            tenant: "demo".into(),
            user: "1001".into(),
            last: false,
            expired: false
        }]
    );

    // `*` needs Expires: 0 and must stand alone.
    let bad = p.again(&mut r, at(2), Algorithm::Sha256, &[h("Contact: *"), h("Expires: 60")]);
    assert_eq!(
        (bad.status(), bad.reason()),
        (Some(400), Some("Invalid Wildcard Contact"))
    );
    let bad = p.again(
        &mut r,
        at(2),
        Algorithm::Sha256,
        &[h("Contact: *, <sip:1001@10.0.0.3>"), h("Expires: 0")],
    );
    assert_eq!(bad.status(), Some(400));
    assert_eq!(r.lookup("demo", "1001").len(), 1);

    assert_eq!(
        p.again(&mut r, at(2), Algorithm::Sha256, &[contact("sip:1001@10.0.0.4")])
            .status(),
        Some(200)
    );
    events(&mut r);
    let ok = p.again(&mut r, at(3), Algorithm::Sha256, &[h("Contact: *"), h("Expires: 0")]);
    assert_eq!(ok.status(), Some(200));
    assert!(contacts(&ok).is_empty());
    assert!(r.lookup("demo", "1001").is_empty());
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(
        events(&mut r),
        vec![RegEvent::Unregistered {
            tenant: "demo".into(),
            user: "1001".into(),
            last: true,
            expired: false
        }]
    );
}

#[test]
fn too_brief_interval_gets_423_with_min_expires() {
    let mut r = registrar();
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let resp = p.register(
        &mut r,
        at(0),
        Algorithm::Sha256,
        &[contact("sip:1001@10.0.0.1"), h("Expires: 30")],
    );
    assert_eq!((resp.status(), resp.reason()), (Some(423), Some("Interval Too Brief")));
    assert_eq!(resp.header_by_name("Min-Expires"), Some("60"));
    assert!(r.lookup("demo", "1001").is_empty());
    // The contact parameter beats the header, both ways.
    let resp = p.again(
        &mut r,
        at(1),
        Algorithm::Sha256,
        &[h("Contact: <sip:1001@10.0.0.1>;expires=59"), h("Expires: 3600")],
    );
    assert_eq!(resp.status(), Some(423));
    let resp = p.again(
        &mut r,
        at(2),
        Algorithm::Sha256,
        &[h("Contact: <sip:1001@10.0.0.1>;expires=60"), h("Expires: 30")],
    );
    assert_eq!(resp.status(), Some(200));
    assert_eq!(contacts(&resp), vec!["<sip:1001@10.0.0.1>;expires=60"]);
    // Too long is shortened to max_expires.
    let resp = p.again(
        &mut r,
        at(3),
        Algorithm::Sha256,
        &[h("Contact: <sip:1001@10.0.0.1>;expires=86400")],
    );
    assert_eq!(contacts(&resp), vec!["<sip:1001@10.0.0.1>;expires=3600"]);
}

#[test]
fn guessing_from_one_source_is_locked_out_for_a_minute() {
    let mut r = registrar();
    let extra = [contact("sip:1001@10.0.0.1")];
    let mut attacker = Phone::new("1001", "wrong", "192.0.2.66:5070");
    // Plain REGISTERs without credentials are not failures.
    for i in 0..(GUESS_LIMIT as u64 * 2) {
        assert_eq!(attacker.send(&mut r, at(i), &extra).status(), Some(401));
    }
    for i in 0..GUESS_LIMIT as u64 {
        let resp = attacker.again(&mut r, at(100 + i), Algorithm::Sha256, &extra);
        assert_eq!(
            resp.status(),
            Some(401),
            "failure {i} is still answered with a challenge"
        );
    }
    // Locked: even the right password from that address is refused, without a challenge.
    let mut same_ip = Phone::new("1001", "demo1001", "192.0.2.66:5071");
    let resp = same_ip.send(&mut r, at(110), &extra);
    assert_eq!((resp.status(), resp.reason()), (Some(403), Some("Forbidden")));
    assert!(resp.header(HeaderName::WwwAuthenticate).is_none());
    assert_eq!(
        resp.header(HeaderName::RetryAfter),
        Some("59"),
        "locked at 109 s for 60 s"
    );
    // Other sources are unaffected.
    let mut agent = Phone::new("1002", "demo1002", "203.0.113.5:40312");
    assert_eq!(
        agent
            .register(&mut r, at(110), Algorithm::Sha256, &[contact("sip:1002@10.0.0.2")])
            .status(),
        Some(200)
    );
    // Lockout over: the right password works again.
    let end = 109 + LOCKOUT.as_secs();
    assert_eq!(
        same_ip
            .send(&mut r, at(end) - Duration::from_millis(1), &extra)
            .status(),
        Some(403)
    );
    assert_eq!(
        same_ip.register(&mut r, at(end), Algorithm::Sha256, &extra).status(),
        Some(200)
    );
}

#[test]
fn failures_spread_over_more_than_the_window_do_not_lock() {
    let mut r = registrar();
    let extra = [contact("sip:1001@10.0.0.1")];
    let mut p = Phone::new("1001", "wrong", "192.0.2.66:5070");
    p.send(&mut r, at(0), &extra);
    for i in 0..(GUESS_LIMIT as u64 * 3) {
        // One failure every 7 s: at most 9 in any 60 s window.
        let resp = p.again(&mut r, at(7 * i), Algorithm::Md5, &extra);
        assert_eq!(resp.status(), Some(401), "attempt {i}");
    }
}

#[test]
fn lockout_spares_a_live_binding_refreshing_from_its_own_address() {
    let mut r = registrar();
    // A good agent behind the call centre's NAT, and a bad phone behind the same public address.
    let mut good = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let extra = [contact("sip:1001@192.168.1.20:5062"), h("Expires: 300")];
    assert_eq!(
        good.register(&mut r, at(0), Algorithm::Sha256, &extra).status(),
        Some(200)
    );
    let mut bad = Phone::new("1002", "oldpassword", "203.0.113.5:40999");
    bad.send(&mut r, at(1), &[contact("sip:1002@192.168.1.30")]);
    for _ in 0..GUESS_LIMIT {
        bad.again(&mut r, at(1), Algorithm::Sha256, &[contact("sip:1002@192.168.1.30")]);
    }
    assert_eq!(bad.send(&mut r, at(2), &[]).status(), Some(403));
    // The good agent's refresh (its Call-ID, its NAT mapping) goes through.
    assert_eq!(good.again(&mut r, at(2), Algorithm::Sha256, &extra).status(), Some(200));
    // A new registration from that address does not.
    let mut fresh = Phone::new("1003", "demo1003", "203.0.113.5:40312");
    assert_eq!(fresh.send(&mut r, at(2), &[]).status(), Some(403));
}

#[test]
fn out_of_order_cseq_on_the_same_call_id_is_refused() {
    let mut r = registrar();
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let extra = [contact("sip:1001@10.0.0.1"), h("Expires: 300")];
    assert_eq!(p.register(&mut r, at(0), Algorithm::Sha256, &extra).status(), Some(200));
    p.cseq -= 2; // the next request reuses an older CSeq
    let resp = p.again(
        &mut r,
        at(1),
        Algorithm::Sha256,
        &[h("Contact: <sip:1001@10.0.0.1>;expires=0")],
    );
    assert_eq!((resp.status(), resp.reason()), (Some(400), Some("CSeq Out Of Order")));
    assert_eq!(r.lookup("demo", "1001").len(), 1, "nothing changed");
}

#[test]
fn max_contacts_drops_the_oldest_or_refuses_an_oversized_request() {
    let cfg = RegistrarConfig {
        max_contacts: 2,
        ..RegistrarConfig::default()
    };
    let mut r = registrar_with(cfg);
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    assert_eq!(
        p.register(&mut r, at(0), Algorithm::Sha256, &[contact("sip:1001@10.0.0.1")])
            .status(),
        Some(200)
    );
    assert_eq!(
        p.again(&mut r, at(1), Algorithm::Sha256, &[contact("sip:1001@10.0.0.2")])
            .status(),
        Some(200)
    );
    events(&mut r);
    let ok = p.again(&mut r, at(2), Algorithm::Sha256, &[contact("sip:1001@10.0.0.3")]);
    assert_eq!(ok.status(), Some(200));
    let mut now: Vec<&str> = r.lookup("demo", "1001").iter().map(|b| b.contact.as_str()).collect();
    now.sort();
    assert_eq!(
        now,
        vec!["sip:1001@10.0.0.2", "sip:1001@10.0.0.3"],
        "the oldest (10.0.0.1) went"
    );
    assert_eq!(
        events(&mut r),
        vec![
            RegEvent::Unregistered {
                tenant: "demo".into(),
                user: "1001".into(),
                last: false,
                expired: false
            },
            RegEvent::Registered {
                tenant: "demo".into(),
                user: "1001".into(),
                first: false
            },
        ]
    );
    let resp = p.again(
        &mut r,
        at(3),
        Algorithm::Sha256,
        &[h(
            "Contact: <sip:1001@10.0.0.7>, <sip:1001@10.0.0.8>, <sip:1001@10.0.0.9>",
        )],
    );
    assert_eq!((resp.status(), resp.reason()), (Some(403), Some("Too Many Contacts")));
    assert_eq!(r.lookup("demo", "1001").len(), 2);
    // A flood of Contacts is refused outright, even if they are all removals.
    let flood: Vec<String> = (0..=MAX_CONTACTS_PER_REQUEST)
        .map(|i| format!("<sip:1001@10.1.0.{i}>;expires=0"))
        .collect();
    let resp = p.again(
        &mut r,
        at(4),
        Algorithm::Sha256,
        &[format!("Contact: {}", flood.join(", "))],
    );
    assert_eq!((resp.status(), resp.reason()), (Some(403), Some("Too Many Contacts")));
    assert_eq!(r.lookup("demo", "1001").len(), 2);
}

#[test]
fn same_instance_replaces_the_binding_of_a_rebooted_phone() {
    let mut r = registrar();
    let inst = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";
    let mut before = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let c1 = format!("Contact: <sip:1001@192.168.1.20:5062>;+sip.instance=\"{inst}\"");
    assert_eq!(
        before.register(&mut r, at(0), Algorithm::Sha256, &[c1]).status(),
        Some(200)
    );
    // Rebooted: new Call-ID, new port, same instance.
    let mut after = Phone::new("1001", "demo1001", "203.0.113.5:40999");
    after.call_id = "rebooted".into();
    let c2 = format!("Contact: <sip:1001@192.168.1.20:5080>;+sip.instance=\"{inst}\"");
    let ok = after.register(&mut r, at(10), Algorithm::Sha256, &[c2]);
    assert_eq!(ok.status(), Some(200));
    let b = r.lookup("demo", "1001");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].contact, "sip:1001@192.168.1.20:5080");
    assert_eq!(b[0].instance.as_deref(), Some(inst));
    assert_eq!(b[0].source, after.src);
}

#[test]
fn credentials_must_match_the_to_user_realm_uri_and_opaque() {
    let mut r = registrar();
    let extra = [contact("sip:1001@10.0.0.1")];
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    p.send(&mut r, at(0), &extra);
    let ch = p.challenge.clone().unwrap();
    let answer = |user: &str, pass: &str, uri: &str, ch: &Challenge| {
        format!(
            "Authorization: {}",
            Credentials::answer(ch, "REGISTER", uri, user, pass, "cn", 1).to_header_value()
        )
    };
    let send = |p: &mut Phone, r: &mut Registrar, auth: String| {
        let mut e = extra.to_vec();
        e.push(auth);
        p.send(r, at(1), &e)
    };
    // Another user's valid credentials for this To: 403 (decided before any lookup).
    let resp = send(&mut p, &mut r, answer("1002", "demo1002", "sip:callgate.example", &ch));
    assert_eq!(
        (resp.status(), resp.reason()),
        (Some(403), Some("Username Does Not Match To"))
    );
    // A digest uri for another host.
    let resp = send(&mut p, &mut r, answer("1001", "demo1001", "sip:elsewhere.example", &ch));
    assert_eq!(resp.status(), Some(400));
    // A realm we do not serve: treated as no credentials at all.
    let foreign = Challenge {
        realm: "other".into(),
        ..ch.clone()
    };
    let resp = send(
        &mut p,
        &mut r,
        answer("1001", "demo1001", "sip:callgate.example", &foreign),
    );
    assert_eq!(resp.status(), Some(401));
    // Opaque dropped or changed.
    let no_opaque = Challenge {
        opaque: None,
        ..ch.clone()
    };
    assert_eq!(
        send(
            &mut p,
            &mut r,
            answer("1001", "demo1001", "sip:callgate.example", &no_opaque)
        )
        .status(),
        Some(401)
    );
    let resp = send(&mut p, &mut r, answer("1001", "demo1001", "sip:callgate.example", &ch));
    assert_eq!(resp.status(), Some(200), "and the right answer still works");
    // The response is over the uri as sent: sent differently than computed fails.
    let good = Credentials::answer(&ch, "REGISTER", "sip:callgate.example", "1001", "demo1001", "cn", 5);
    let tampered = Credentials {
        uri: "sip:CALLGATE.example".into(),
        ..good
    };
    assert_eq!(
        send(&mut p, &mut r, format!("Authorization: {}", tampered.to_header_value())).status(),
        Some(401)
    );
    // Malformed credentials: 400 with a Warning that says what was wrong.
    let resp = send(&mut p, &mut r, h("Authorization: Digest username=\"1001\", nc=12"));
    assert_eq!(
        (resp.status(), resp.reason()),
        (Some(400), Some("Malformed Authorization"))
    );
    assert!(resp.header_by_name("Warning").unwrap().contains("8 hex digits"));
}

#[test]
fn non_register_and_bad_to_are_refused() {
    let mut r = registrar();
    let req = Message::parse(Bytes::from_static(
        b"OPTIONS sip:callgate.example SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    let resp = Message::parse(r.handle_register(at(0), &req, peer("192.0.2.1:5060"))).unwrap();
    assert_eq!(resp.status(), Some(405));
    assert_eq!(resp.header(HeaderName::Allow), Some("REGISTER"));
    let req = Message::parse(Bytes::from_static(
        b"REGISTER sip:callgate.example SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <tel:+8221234567>;tag=1\r\n\
To: <tel:+8221234567>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    let resp = Message::parse(r.handle_register(at(0), &req, peer("192.0.2.1:5060"))).unwrap();
    assert_eq!(resp.status(), Some(400));
    assert!(resp.to_hdr().unwrap().tag().is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever comes in an Authorization header, the registrar answers and does not panic.
    #[test]
    fn arbitrary_authorization_values_never_panic(
        v in prop_oneof![
            "[ -~]{0,200}",
            "Digest [ -~]{0,200}",
            "Digest ((username|realm|nonce|uri|response|nc|cnonce|qop|algorithm|opaque)=(\"[ -~]{0,20}\"?|[!-~]{0,20}), ?){0,12}",
            "\\PC{0,80}",
        ],
        nonce_hex in "[0-9a-f]{64}",
    ) {
        let mut r = registrar();
        let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
        let _ = Credentials::parse(&v);
        for value in [v.clone(), v.replace("NONCE", &nonce_hex)] {
            let raw = format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:1001@{DOMAIN}>;tag=1\r\n\
                 To: <sip:1001@{DOMAIN}>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@10.0.0.1>\r\n\
                 Authorization: {value}\r\nContent-Length: 0\r\n\r\n"
            );
            if let Ok(req) = Message::parse(Bytes::from(raw)) {
                let out = r.handle_register(at(0), &req, p.src);
                let resp = Message::parse(out).expect("our answer parses");
                prop_assert!(matches!(resp.status(), Some(400 | 401 | 403)));
            }
        }
        // And a real exchange still works afterwards.
        prop_assert_eq!(p.register(&mut r, at(1), Algorithm::Sha256, &[contact("sip:1001@10.0.0.1")]).status(), Some(200));
    }
}

#[test]
fn challenge_order_can_put_md5_first_or_refuse_md5() {
    let mut r = registrar();
    r.set_challenge_order(&[Algorithm::Md5, Algorithm::Sha256, Algorithm::Md5]);
    let mut p = Phone::new("1001", "demo1001", "203.0.113.5:40312");
    let first = p.send(&mut r, at(0), &[contact("sip:1001@10.0.0.1")]);
    let algs: Vec<Algorithm> = challenges(&first).iter().map(|c| c.algorithm).collect();
    assert_eq!(algs, vec![Algorithm::Md5, Algorithm::Sha256]);

    r.set_challenge_order(&[Algorithm::Sha256]);
    let only = p.send(&mut r, at(1), &[contact("sip:1001@10.0.0.1")]);
    assert_eq!(challenges(&only).len(), 1);
    let md5 = p.again(&mut r, at(1), Algorithm::Md5, &[contact("sip:1001@10.0.0.1")]);
    assert_eq!(md5.status(), Some(401), "MD5 not offered, not accepted");
    let sha = p.again(&mut r, at(1), Algorithm::Sha256, &[contact("sip:1001@10.0.0.1")]);
    assert_eq!(sha.status(), Some(200));
}
